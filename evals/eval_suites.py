"""Quality suites for infill and rewrite: tasks, scoring, and a sandboxed test runner (torch-free).

Suites
- ``humaneval``: HumanEval-Infilling random-span-light (vendored under ``evals/data/human-eval-infilling``,
  MIT license), scored by pass@1: the filled program and its tests run in a sandboxed subprocess.
- ``line``: one non-blank line cut from a held-out standard-library file (the hole starts after the
  line's indentation and ends before its newline), scored by exact match and by whether the filled
  file still parses.
- ``multiline``: 2-4 whole consecutive lines (at least one non-blank), scored the same way.
- ``rewrite``: a held-out line whose selection is a corrupted copy of the truth (a few tokens
  replaced); scored by exact match of the rewrite.

The held-out files are ``HELD_OUT_FILES``, read from the running interpreter's standard library;
the training program's split (``diffgemma.training.corpus.is_held_out``) never trains on them. Spans
are chosen by a seeded ``random.Random``, so a suite is the same list of tasks on every run.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import json
import os
import random
import resource
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

HUMANEVAL_PATH = Path(__file__).resolve().parent / "data" / "human-eval-infilling" / (
    "HumanEval-RandomSpanInfillingLight.jsonl.gz"
)
# The context handed to the model around a span: like the front ends' budgeted windows, cut on
# line boundaries. The whole file is still used to check that the filled file parses.
PREFIX_CHARS = 1200
SUFFIX_CHARS = 400

# The held-out standard-library files the span suites are cut from: what the training split's
# hash rule (``diffgemma.training.corpus.is_held_out``) holds out of CPython 3.11's standard
# library, the files diffgemma-mini was evaluated on and never saw. A file another Python version
# lacks is skipped.
HELD_OUT_FILES: tuple[str, ...] = (
    "asynchat.py", "asyncio/trsock.py", "curses/ascii.py", "distutils/_msvccompiler.py",
    "distutils/command/__init__.py", "distutils/command/build_py.py", "html/__init__.py", "http/client.py",
    "idlelib/searchengine.py", "importlib/abc.py", "logging/handlers.py", "secrets.py",
    "tkinter/simpledialog.py", "types.py", "xml/etree/__init__.py", "xml/sax/__init__.py",
)


@dataclass(frozen=True)
class Task:
    id: str
    suite: str
    prefix: str  # the context the model sees before the hole
    suffix: str  # the context after it
    truth: str  # the text that was cut out
    file_prefix: str = ""  # the whole file around the hole, for the parse check
    file_suffix: str = ""
    test: str | None = None  # HumanEval: test code defining check(candidate)
    entry_point: str | None = None
    selection: str | None = None  # rewrite: the corrupted text to rewrite


# ---------------------------------------------------------------------------- scoring


def normalize(text: str) -> str:
    """Trailing whitespace on each line and trailing newlines do not count."""
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n")


def exact_match(fill: str, truth: str) -> bool:
    return normalize(fill) == normalize(truth)


_TS_PARSER = None


def _ts_parser():
    global _TS_PARSER
    if _TS_PARSER is None:
        from tree_sitter_language_pack import get_parser

        _TS_PARSER = get_parser("python")
    return _TS_PARSER


def parses(source: str) -> bool:
    """The file parses both for tree-sitter's Python grammar (no ERROR/MISSING nodes) and ``ast``."""
    tree = _ts_parser().parse(source.encode("utf-8"))
    if tree.root_node.has_error:
        return False
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------- sandbox


@dataclass(frozen=True)
class RunOutcome:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    detail: str = ""


def _limit_resources(memory_bytes: int, cpu_seconds: int) -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB per written file
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()  # its own process group, so a timeout kills everything it started


def run_sandboxed(program: str, timeout: float = 5.0, memory_mb: int = 512) -> RunOutcome:
    """Run ``program`` with ``python -I`` in an empty temporary directory under resource limits.

    Not a security boundary against hostile code, but it keeps a wrong or looping completion
    from hanging the evaluation, eating memory, writing big files or reading the user's
    site-packages and environment.
    """
    cpu = max(1, int(timeout) + 1)
    with tempfile.TemporaryDirectory(prefix="diffgemma-eval-") as tmp:
        script = Path(tmp) / "candidate.py"
        script.write_text(program, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", str(script)],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: _limit_resources(memory_mb << 20, cpu),
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return RunOutcome(False, "timeout", f"no result within {timeout:g}s")
    if proc.returncode == 0:
        return RunOutcome(True, "passed")
    lines = err.decode("utf-8", "replace").strip().splitlines()
    if proc.returncode < 0 and -proc.returncode == signal.SIGXCPU:
        return RunOutcome(False, "timeout", "CPU time limit")
    return RunOutcome(False, "failed", lines[-1] if lines else f"exit status {proc.returncode}")


def humaneval_program(task: Task, fill: str) -> str:
    return f"{task.prefix}{fill}{task.suffix}\n{task.test}\n\ncheck({task.entry_point})\n"


def run_humaneval(task: Task, fill: str, timeout: float = 5.0) -> RunOutcome:
    return run_sandboxed(humaneval_program(task, fill), timeout=timeout)


# ---------------------------------------------------------------------------- suites


def load_humaneval(path: Path | None = None, limit: int | None = None) -> list[Task]:
    """HumanEval-Infilling tasks in file order (the first ``limit`` of them)."""
    tasks = []
    with gzip.open(path or HUMANEVAL_PATH, "rt", encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            tasks.append(Task(
                id=row["task_id"], suite="humaneval", prefix=row["prompt"], suffix=row["suffix"],
                truth=row["canonical_solution"], file_prefix=row["prompt"], file_suffix=row["suffix"],
                test=row["test"], entry_point=row["entry_point"],
            ))
            if limit is not None and len(tasks) >= limit:
                break
    return tasks


def window(file_prefix: str, file_suffix: str) -> tuple[str, str]:
    """The model's view: at most PREFIX_CHARS before and SUFFIX_CHARS after, cut at line starts/ends."""
    prefix = file_prefix
    if len(prefix) > PREFIX_CHARS:
        cut = prefix.find("\n", len(prefix) - PREFIX_CHARS)
        prefix = prefix[cut + 1:] if cut != -1 else prefix[-PREFIX_CHARS:]
    suffix = file_suffix
    if len(suffix) > SUFFIX_CHARS:
        cut = suffix.rfind("\n", 0, SUFFIX_CHARS)
        suffix = suffix[: cut + 1] if cut > 0 else suffix[:SUFFIX_CHARS]
    return prefix, suffix


def held_out_sources(root: Path | None = None) -> list[tuple[str, str]]:
    """(relative path, text) of the held-out files under ``root`` (the stdlib by default) that parse."""
    base = root or Path(sysconfig.get_paths()["stdlib"])
    out = []
    for rel in HELD_OUT_FILES:
        try:
            text = (base / rel).read_text(encoding="utf-8")
            ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        out.append((rel, text))
    return out


def _usable_line(line: str) -> bool:
    body = line.strip()
    return 3 <= len(body) <= 100


def span_tasks(kind: str, limit: int, seed: int = 0, root: Path | None = None) -> list[Task]:
    """``kind`` "line" or "multiline" spans from held-out files, spread over files round-robin."""
    if kind not in ("line", "multiline"):
        raise ValueError(f"unknown span kind {kind!r}")
    rng = random.Random(f"{kind}:{seed}")
    sources = held_out_sources(root)
    per_file: list[list[Task]] = []
    for rel, text in sources:
        lines = text.split("\n")
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line) + 1)
        candidates: list[Task] = []
        indexes = list(range(1, len(lines) - 1))
        rng.shuffle(indexes)
        for i in indexes[:200]:
            if kind == "line":
                line = lines[i]
                if not _usable_line(line):
                    continue
                indent = len(line) - len(line.lstrip())
                start, end = offsets[i] + indent, offsets[i] + len(line)
            else:
                count = rng.randint(2, 4)
                block = lines[i: i + count]
                if len(block) < count or not any(_usable_line(b) for b in block) or len("\n".join(block)) > 240:
                    continue
                start, end = offsets[i], offsets[i + count - 1] + len(lines[i + count - 1])
            file_prefix, truth, file_suffix = text[:start], text[start:end], text[end:]
            prefix, suffix = window(file_prefix, file_suffix)
            candidates.append(Task(
                id=f"{rel}:{i + 1}", suite=kind, prefix=prefix, suffix=suffix, truth=truth,
                file_prefix=file_prefix, file_suffix=file_suffix,
            ))
        per_file.append(candidates)
    tasks: list[Task] = []
    depth = 0
    while len(tasks) < limit and any(depth < len(c) for c in per_file):
        for candidates in per_file:
            if depth < len(candidates) and len(tasks) < limit:
                tasks.append(candidates[depth])
        depth += 1
    return tasks


def corrupt(truth_ids: list[int], vocab_ids: list[int], rng: random.Random, fraction: float = 0.25) -> list[int]:
    """Replace about ``fraction`` of the tokens (at least one) with tokens drawn from ``vocab_ids``."""
    ids = list(truth_ids)
    if not ids:
        return ids
    count = max(1, round(len(ids) * fraction))
    for position in rng.sample(range(len(ids)), min(count, len(ids))):
        choices = [v for v in rng.sample(vocab_ids, min(8, len(vocab_ids))) if v != ids[position]]
        ids[position] = choices[0] if choices else ids[position]
    return ids


def rewrite_tasks(line_tasks: list[Task], encode, decode, vocab_ids: list[int], seed: int = 0) -> list[Task]:
    """Rewrite tasks: each line task's truth with a few tokens replaced as the selection.

    ``encode``/``decode`` are the model's tokenizer functions (text <-> ids); ``vocab_ids`` the
    ordinary (non-special) token ids to draw replacements from.
    """
    rng = random.Random(f"rewrite:{seed}")
    out = []
    for task in line_tasks:
        ids = encode(task.truth)
        for _ in range(5):
            selection = decode(corrupt(ids, vocab_ids, rng))
            if selection != task.truth and "\n" not in selection:
                break
        else:
            continue
        out.append(Task(
            id=task.id, suite="rewrite", prefix=task.prefix, suffix=task.suffix, truth=task.truth,
            file_prefix=task.file_prefix, file_suffix=task.file_suffix, selection=selection,
        ))
    return out


# ---------------------------------------------------------------------------- trivial baselines


def empty_fill(task: Task) -> str:
    return ""


def previous_line_fill(task: Task) -> str:
    """Repeat the line before the hole.

    When the hole starts after indentation (or at a line start), the previous line is repeated
    from the same column; when it starts after code on the same line, the previous line goes on
    a new line after it.
    """
    head, _, current = task.prefix.rpartition("\n")
    if not head and not current:
        return ""
    if current.strip():
        return "\n" + current
    previous = head.rsplit("\n", 1)[-1]
    return previous[len(current):] if previous.startswith(current) else previous.lstrip()
