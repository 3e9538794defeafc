"""The training data: the ``.py`` files of the running interpreter's standard library (PSF license),
minus test suites and generated tables, and the held-out split that is never trained on.

A file is held out when a hash of its relative path says so (``is_held_out``), so the split is
the same on every machine and needs no list. The quality suites cut their spans from the files
this rule holds out of CPython 3.11 (``diffgemma.evals.eval_suites.HELD_OUT_FILES``).
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

# Folders whose files are test suites, generated tables or vendored third-party code.
EXCLUDED_PARTS = frozenset(
    {"test", "tests", "idle_test", "encodings", "site-packages", "__pycache__", "pydoc_data", "ensurepip"}
)
MAX_FILE_BYTES = 400_000  # larger files in the stdlib are generated data, not code people write
HELD_OUT_MODULUS = 40  # about 1 file in 40 is held out


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def is_held_out(relative_path: str) -> bool:
    """The evaluation split: sha256 of the POSIX relative path, first 8 hex digits, mod 40 == 0."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % HELD_OUT_MODULUS == 0


def source_files(root: Path | None = None) -> list[str]:
    """Sorted relative POSIX paths of the eligible ``.py`` files under ``root`` (the stdlib by default)."""
    base = root or stdlib_root()
    found = []
    for path in base.rglob("*.py"):
        rel = path.relative_to(base)
        if EXCLUDED_PARTS.intersection(rel.parts) or not path.is_file():
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            continue
        found.append(rel.as_posix())
    return sorted(found)


def split_files(root: Path | None = None) -> tuple[list[str], list[str]]:
    """(training files, held-out files), both sorted, disjoint."""
    files = source_files(root)
    held = [f for f in files if is_held_out(f)]
    train = [f for f in files if not is_held_out(f)]
    return train, held


def read_texts(root: Path, files: list[str]) -> list[str]:
    """The texts of ``files`` under ``root``; a file that cannot be read as UTF-8 is left out."""
    texts = []
    for rel in files:
        try:
            texts.append((root / rel).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return texts
