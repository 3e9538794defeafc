"""Next-edit tasks with an exact oracle, built from Python code (torch-free).

Each task applies one edit to a held-out file and knows every consequence, from Python's own
syntax tree:

- ``rename-parameter``: a function's parameter renamed in its ``def`` line; expected: every use of
  it in the function renamed too.
- ``rename-local``: a local variable renamed where it is first assigned; expected: its other uses in
  the function renamed.
- ``add-parameter``: a module-level function gains a last positional parameter ``extra``; expected:
  every call of it in the file passes ``extra`` as its last argument (the oracle's convention:
  the caller passes a value of the same name).
- ``rename-method``: a method renamed in its ``def`` line; expected: every ``.name`` attribute in
  the file renamed (the calls of it through ``self`` and other objects). A method whose name is
  also a bare name somewhere in the file is not used (an alias in the class body, or another
  thing of the same name: the oracle could not tell).

A task is the file after the edit (``text``), the edit as a unified diff, the line where the
edit happened (the cursor), and the file as it should end (``expected``). Names are chosen so the
new name appears nowhere in the file before. Choices are seeded: the same seed gives the same
tasks. Only tasks whose edited and expected files parse are kept, and only those whose
consequences change whole lines in place (no line count changes), so a proposal is judged line by
line.
"""

from __future__ import annotations

import ast
import difflib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from diffgemma.evals.eval_suites import held_out_sources

KINDS = ("rename-parameter", "rename-local", "add-parameter", "rename-method")
NEW_PARAMETER = "extra"
MAX_FUNCTION_LINES = 80  # a longer function is skipped: beyond what a few suggestions cover


@dataclass(frozen=True)
class NextEditTask:
    id: str
    kind: str
    path: str
    original: str  # the file before the edit
    text: str  # the file after the user's edit: what the model sees
    diff: str  # the user's edit, as a unified diff
    cursor_line: int  # 0-based: where the edit happened
    expected: str  # the file with every consequence of the edit made

    @property
    def changed_lines(self) -> list[int]:
        """The lines (0-based) the consequences change: ``text`` and ``expected`` differ there."""
        return [i for i, (a, b) in enumerate(zip(self.text.split("\n"), self.expected.split("\n"), strict=True))
                if a != b]


Spot = tuple[int, int, int]  # (0-based line, column, length) of a name in the source


def _replace(source: str, spots: list[Spot], new: str) -> str:
    lines = source.split("\n")
    for line, col, length in sorted(spots, reverse=True):
        lines[line] = lines[line][:col] + new + lines[line][col + length:]
    return "\n".join(lines)


def _insert(source: str, spots: list[tuple[int, int, str]]) -> str:
    lines = source.split("\n")
    for line, col, text in sorted(spots, reverse=True):
        lines[line] = lines[line][:col] + text + lines[line][col:]
    return "\n".join(lines)


def _diff(path: str, before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _byte_col(source_lines: list[str], line: int, col: int) -> int:
    """ast's columns count UTF-8 bytes; ours count characters."""
    return len(source_lines[line].encode("utf-8")[:col].decode("utf-8", "replace"))


def _name_spot(lines: list[str], node: ast.AST, name: str) -> Spot:
    line = node.lineno - 1  # type: ignore[attr-defined]
    return line, _byte_col(lines, line, node.col_offset), len(name)  # type: ignore[attr-defined]


def _attribute_spot(lines: list[str], node: ast.Attribute) -> Spot | None:
    """Where ``node.attr`` is written: right before the node's end, on its last line."""
    assert node.end_lineno is not None and node.end_col_offset is not None
    line = node.end_lineno - 1
    end = _byte_col(lines, line, node.end_col_offset)
    start = end - len(node.attr)
    return (line, start, len(node.attr)) if lines[line][start:end] == node.attr else None


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            if node.end_lineno - node.lineno < MAX_FUNCTION_LINES:
                yield node


def _fresh(name: str, taken: set[str]) -> str:
    for candidate in (f"{name}_value", f"the_{name}", f"{name}2", f"new_{name}"):
        if candidate not in taken:
            return candidate
    raise ValueError(name)


def _own_names(function: ast.AST) -> list[ast.Name]:
    """Names in ``function``'s body, not in functions or classes nested in it."""
    out: list[ast.Name] = []
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Name):
            out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _rename_parameter(function: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str],
                      taken: set[str]) -> tuple[int, list[Spot], list[Spot], str] | None:
    """(cursor line, the edit's spots, the consequences' spots, new name) for a parameter."""
    params = [a for a in function.args.args + function.args.kwonlyargs if a.arg not in ("self", "cls")]
    names = _own_names(function)
    for arg in params:
        uses = [n for n in names if n.id == arg.arg]
        if uses and arg.lineno == function.lineno:
            return arg.lineno - 1, [_name_spot(lines, arg, arg.arg)], [_name_spot(lines, n, arg.arg) for n in uses], \
                _fresh(arg.arg, taken)
    return None


def _rename_local(function: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str],
                  taken: set[str]) -> tuple[int, list[Spot], list[Spot], str] | None:
    params = {a.arg for a in function.args.args + function.args.kwonlyargs + function.args.posonlyargs}
    names = sorted(_own_names(function), key=lambda n: (n.lineno, n.col_offset))
    declared = {n for node in ast.walk(function) if isinstance(node, ast.Global | ast.Nonlocal) for n in node.names}
    for first in names:
        if not isinstance(first.ctx, ast.Store) or first.id in params or first.id in declared or len(first.id) < 2:
            continue
        rest = [n for n in names if n.id == first.id and n is not first]
        if rest and all((n.lineno, n.col_offset) > (first.lineno, first.col_offset) for n in rest):
            return first.lineno - 1, [_name_spot(lines, first, first.id)], \
                [_name_spot(lines, n, first.id) for n in rest], _fresh(first.id, taken)
    return None


def _plain_call(node: ast.AST, name: str) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
            and not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args))


def _add_parameter(tree: ast.Module, function: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str],
                   taken: set[str]) -> tuple[int, list[tuple[int, int, str]], list[tuple[int, int, str]]] | None:
    """(cursor line, the parameter's insertion, each call's argument's insertion); None unless the
    function takes plain positional parameters and every call of it is plain and on one line."""
    args = function.args
    if (function not in tree.body or NEW_PARAMETER in taken or args.vararg or args.kwarg or args.kwonlyargs
            or args.defaults or args.posonlyargs):
        return None
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id == function.name]
    if not calls or not all(_plain_call(c, function.name) for c in calls):
        return None
    closing = [(line, _byte_col(lines, line, c.end_col_offset or 0) - 1)
               for c in calls for line in [(c.end_lineno or c.lineno) - 1]]
    def_line = function.lineno - 1
    if any(c.lineno != c.end_lineno or line == def_line or lines[line][col] != ")"
           for c, (line, col) in zip(calls, closing, strict=True)):
        return None
    head = lines[def_line]
    close = head.find("):") if head.rstrip().endswith(":") else -1
    if close < 0 or f"def {function.name}(" not in head:
        return None
    inserts = [(line, col, NEW_PARAMETER if lines[line][:col].rstrip().endswith("(") else f", {NEW_PARAMETER}")
               for line, col in closing]
    return def_line, [(def_line, close, f", {NEW_PARAMETER}" if args.args else NEW_PARAMETER)], inserts


def _rename_method(tree: ast.Module, function: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str],
                   taken: set[str], methods: dict[str, int]) -> tuple[int, list[Spot], list[Spot], str] | None:
    name = function.name
    # a bare name in the file may be the method itself (`alias = method` in the class body) or
    # something else: which, only a reader knows, so such a method is not a task
    if methods.get(name, 0) != 1 or name.startswith("__") or any(
            isinstance(n, ast.Name) and n.id == name for n in ast.walk(tree)):
        return None
    refs = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == name]
    spots = [s for s in (_attribute_spot(lines, n) for n in refs) if s is not None]
    head = lines[function.lineno - 1]
    col = head.find(f"def {name}(")
    if not spots or len(spots) != len(refs) or col < 0:
        return None
    return function.lineno - 1, [(function.lineno - 1, col + 4, len(name))], spots, _fresh(name, taken)


def _candidates(path: str, source: str, rng: random.Random, cap: int) -> dict[str, list[NextEditTask]]:
    """Up to ``cap`` tasks of each kind from one file, its functions taken in ``rng``'s order."""
    tree = ast.parse(source)
    lines = source.split("\n")
    taken = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {
        a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)} | {
        f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    methods: dict[str, int] = {}
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for item in cls.body:
            if isinstance(item, ast.FunctionDef):
                methods[item.name] = methods.get(item.name, 0) + 1
    found: dict[str, list[NextEditTask]] = {kind: [] for kind in KINDS}

    def keep(kind: str, line: int, text: str, expected: str) -> None:
        if len(found[kind]) < cap and text != source and expected != text and _parses(text) and _parses(expected) and \
                len(text.split("\n")) == len(expected.split("\n")) == len(lines):
            found[kind].append(NextEditTask(f"{path}:{line + 1}:{kind}", kind, path, source, text,
                                            _diff(path, source, text), line, expected))

    in_classes = {id(item) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for item in cls.body}
    functions = list(_functions(tree))
    rng.shuffle(functions)
    for function in functions:
        if all(len(found[kind]) >= cap for kind in KINDS):
            break
        for kind, make in (("rename-parameter", _rename_parameter), ("rename-local", _rename_local)):
            got = make(function, lines, taken)
            if got is not None:
                line, edit, rest, new = got
                text = _replace(source, edit, new)
                keep(kind, line, text, _replace(source, edit + rest, new))
        added = _add_parameter(tree, function, lines, taken)
        if added is not None:
            line, parameter, arguments = added
            text = _insert(source, parameter)
            keep("add-parameter", line, text, _insert(text, arguments))
        if id(function) in in_classes:
            renamed = _rename_method(tree, function, lines, taken, methods)
            if renamed is not None:
                line, edit, rest, new = renamed
                text = _replace(source, edit, new)
                keep("rename-method", line, text, _replace(source, edit + rest, new))
    return found


def next_edit_tasks(limit: int, seed: int = 0, root: Path | None = None,
                    kinds: tuple[str, ...] = KINDS) -> list[NextEditTask]:
    """Up to ``limit`` tasks of each kind from the held-out files, spread over the files."""
    rng = random.Random(f"next-edit:{seed}")
    per_kind: dict[str, list[list[NextEditTask]]] = {kind: [] for kind in kinds}
    sources = held_out_sources(root)
    cap = -(-limit // max(1, len(sources))) + 1  # enough per file for the round-robin below
    for rel, source in sources:
        found = _candidates(rel, source, rng, cap)
        for kind in kinds:
            per_kind[kind].append(found[kind])
    out: list[NextEditTask] = []
    for kind in kinds:
        chosen: list[NextEditTask] = []
        depth = 0
        lists = per_kind[kind]
        while len(chosen) < limit and any(depth < len(t) for t in lists):
            for tasks in lists:
                if depth < len(tasks) and len(chosen) < limit:
                    chosen.append(tasks[depth])
            depth += 1
        out.extend(chosen)
    return out
