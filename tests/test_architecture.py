"""The package's shape, checked from its source: import direction, sizes, typed ignores, the wheel.

Dependencies go one way: front ends (cli, lsp) -> context, runtime.api -> (HTTP) -> runtime.daemon
-> runtime.engine -> kernels; training and evals -> runtime.engine. A module that imports against
that direction fails here with its file, line and the import.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("cli", "lsp", "context", "runtime", "kernels", "training", "evals")

# Room -> the rooms its modules may import (always including itself). `runtime.api.config` is
# the one settings module every room reads, `runtime.api.errors` the base of every error and the
# one first-line helper; the engine's results share the wire's finish reasons
# (`runtime.api.results`); `context` is a torch-free library of tree-sitter helpers (the engine's
# repair parses fills with it).
ALLOWED: dict[str, tuple[str, ...]] = {
    "runtime": ("runtime",),  # runtime/__init__.py: the docstring of the three rooms
    "context": ("context",),
    "kernels": ("kernels", "runtime.api.config", "runtime.api.errors"),
    "runtime.api": ("runtime.api", "context"),
    "runtime.engine": ("runtime.engine", "kernels", "context", "runtime.api.config", "runtime.api.errors",
                       "runtime.api.results"),
    "runtime.daemon": ("runtime.daemon", "runtime.engine", "runtime.api", "context"),
    "cli": ("cli", "context", "runtime.api"),
    "lsp": ("lsp", "context", "runtime.api"),
    "training": ("training", "runtime.engine", "kernels", "runtime.api.config", "runtime.api.errors"),
    "evals": ("evals", "runtime.engine", "runtime.api", "context"),
}
# Some commands become the process they start: `serve` is the daemon, `lsp` the language server,
# `eval`/`train`/`bench`/`quantize` run their tool in-process. They import it inside the command
# body only, so `diffgemma --help` and the generating commands never load it.
LAZY_ALLOWED: dict[str, tuple[str, ...]] = {"cli": ("evals", "training", "lsp", "runtime.daemon")}
# Never imported by the torch-free parts, not even inside a function.
HEAVY = ("torch", "transformers", "triton", "safetensors", "tokenizers", "bitsandbytes")
TORCH_FREE = ("cli", "lsp", "context", "runtime.api")

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _source_files(dirs: tuple[str, ...] = CODE_DIRS) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "runtime" and len(parts) > 1 else parts[0]


def _imports(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, imported module, inside a function) for every absolute import in the tree."""
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                # `from diffgemma.runtime.api import config` imports diffgemma.runtime.api.config
                found.extend((child.lineno, f"{child.module}.{alias.name}", nested) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def _allowed(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def _package_imports(target: str) -> str | None:
    """The part of diffgemma an imported name refers to, or None for other packages and for the
    top-level package itself (its version)."""
    if not target.startswith("diffgemma.") or target == "diffgemma.__version__":
        return None
    return target.removeprefix("diffgemma.")


def test_imports_follow_the_dependency_direction() -> None:
    wrong = []
    for path in _source_files():
        module = _module_name(path)
        room = _room(module)
        allowed = ALLOWED[room]
        for line, target, nested in _imports(ast.parse(path.read_text(), str(path))):
            inner = _package_imports(target)
            if inner is None:
                continue
            if _allowed(inner, allowed) or (nested and _allowed(inner, LAZY_ALLOWED.get(room, ()))):
                continue
            # `from diffgemma.runtime import api` names a room itself: judge it by that room.
            if inner in ("runtime", "runtime.api", "runtime.daemon", "runtime.engine") and _allowed(
                    inner, tuple(a for a in allowed if a.startswith(inner))):
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line}: {room} imports diffgemma.{inner}")
    assert not wrong, "imports against the dependency direction:\n" + "\n".join(wrong)


def test_front_ends_and_api_never_import_heavy_packages() -> None:
    wrong = []
    for path in _source_files(tuple(d.replace(".", "/") for d in TORCH_FREE)):
        for line, target, _nested in _imports(ast.parse(path.read_text(), str(path))):
            if target.split(".")[0] in HEAVY:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_a_wrong_import() -> None:
    tree = ast.parse("import os\nfrom diffgemma.runtime.engine import engine\ndef f():\n    import torch\n")
    assert [(line, name) for line, name, _ in _imports(tree)] == [
        (1, "os"), (2, "diffgemma.runtime.engine.engine"), (4, "torch")]
    assert not _allowed("runtime.engine.engine", ALLOWED["cli"])
    assert _allowed("runtime.api.client", ALLOWED["lsp"])


def test_functions_and_modules_stay_small() -> None:
    too_long = []
    for path in _source_files(("benchmarks", *CODE_DIRS)):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is {length} lines "
                                    f"(at most {MAX_FUNCTION_LINES})")
    assert not too_long, "\n".join(too_long)


def test_every_type_ignore_names_its_error_code() -> None:
    bare = re.compile(r"#\s*type:\s*ignore(?!\[)")
    found = [f"{p.relative_to(ROOT)}:{i}" for p in _source_files(("benchmarks", *CODE_DIRS))
             for i, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert not found, "type: ignore without an error code:\n" + "\n".join(found)


def test_settings_are_read_in_the_config_module_only() -> None:
    """`DIFFGEMMA_*` names are spelled in runtime/api/config.py alone (help texts may show them)."""
    spelled = re.compile(r"""(?:environ(?:\.get)?\s*[\[(]|getenv\(|envvar\s*=)\s*["']DIFFGEMMA_""")
    found = [f"{p.relative_to(ROOT)}:{i}" for p in _source_files() if p.name != "config.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if spelled.search(line)]
    assert not found, "environment read outside runtime/api/config.py:\n" + "\n".join(found)


@pytest.mark.timeout(300)
def test_the_wheel_holds_the_package_and_its_model_only(tmp_path: Path) -> None:
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True, timeout=280)
    (wheel,) = out.glob("diffgemma-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[1] for n in names if n.startswith("diffgemma/") and n.count("/") > 1}
    assert tops == {"cli", "lsp", "context", "runtime", "kernels", "training", "evals"}
    model = {n.rsplit("/", 1)[1] for n in names if "/models/diffgemma-mini/" in n}
    assert {"model.safetensors", "config.json", "tokenizer.json", "MODEL_CARD.md"} <= model
    assert not [n for n in names if re.search(r"training_log|training_files|training_args|/tests?/|conftest", n)]
    assert any(n.endswith("evals/data/human-eval-infilling/HumanEval-RandomSpanInfillingLight.jsonl.gz")
               for n in names)


def test_the_readme_lists_every_environment_variable() -> None:
    from diffgemma.runtime.api import config

    names = {value for name, value in vars(config).items() if name.startswith("ENV_")}
    readme = (ROOT / "README.md").read_text()
    assert names and not [n for n in sorted(names) if f"`{n}`" not in readme]


def test_the_readme_config_example_shows_the_defaults() -> None:
    """The README's config.toml example: every key once, set to its default in runtime.api.config,
    or commented out when the code has no default."""
    import tomllib

    from diffgemma.runtime.api import config

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\n\n((?:    #? ?[a-z_]+ = .+\n)+)", readme.split("## Command line", 1)[1])
    assert block is not None, "no config.toml example in the README's Command line section"
    lines = [line.strip() for line in block.group(1).splitlines()]
    shown = tomllib.loads("\n".join(line.removeprefix("#").strip() for line in lines))
    assert sorted(shown) == sorted(config.CONFIG_KEYS)  # every key, once
    set_in_readme = tomllib.loads("\n".join(line for line in lines if not line.startswith("#")))
    defaults = {key: default for key, (_kind, default) in config.CONFIG_KEYS.items() if default is not None}
    assert set_in_readme == defaults


def _table_rows(section: str) -> dict[str, str]:
    """The README table rows of a section: first cell (without backticks) -> second cell."""
    readme = (ROOT / "README.md").read_text()
    rows = {}
    for line in readme.split(section, 1)[1].split("\n\n", 2)[1].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def test_the_readme_tables_show_the_daemon_and_language_server_defaults() -> None:
    """The defaults the README's daemon-flag and language-server-setting tables give are the code's."""
    import json

    from diffgemma.lsp.settings import Settings, settings_to_json
    from diffgemma.runtime.api import config

    flags = _table_rows("Daemon flags (")
    assert float(flags["--max-request-seconds S"]) == config.DEFAULT_MAX_REQUEST_SECONDS
    assert int(flags["--max-steps N"]) == config.DEFAULT_MAX_STEPS
    assert int(flags["--max-tokens N"]) == config.DEFAULT_MAX_TOKENS
    settings = _table_rows("Settings go in `initializationOptions`")
    defaults = settings_to_json(Settings())
    shown = {key: json.loads(settings[key]) for key in ("autoStart", "debounceMs", "contextChars", "crossFile",
                                                          "enable", "alternatives", "confidentPrefix")}
    assert shown == {key: defaults[key] for key in shown}
    assert defaults["maxTokens"] is None and defaults["steps"] is None  # "daemon decides", "model default"
    assert set(settings) == set(defaults)  # every setting documented
