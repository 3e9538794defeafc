"""Syntax errors of a filled window, and which of them a fill brought in (torch-free).

The engine's repair step asks: after splicing the fills into the window around them, does the
text have ERROR or MISSING nodes that the window without the fills did not have? The window a
front end cuts often does not parse on its own (it starts or ends inside a construct), so the
question is always relative to the empty fill: errors that lie wholly in the fixed text, at the
same place as without the fills, belong to the surroundings and are not the fill's doing.
"""

from __future__ import annotations

import ast
import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from diffgemma.context.languages import get_parser, normalize_language

# Tree-sitter's error recovery can walk a pathological buffer for long; the repair is an
# optional refinement, so a parse is abandoned past this (microseconds).
PARSE_TIMEOUT_US = 200_000
MAX_NODES = 20_000


@dataclass(frozen=True)
class SyntaxIssue:
    """An innermost ERROR node or a MISSING node, or the first error Python's parser reports, as
    character offsets into the parsed text."""

    start: int
    end: int
    missing: bool
    message: str = ""  # Python's parser: what it says (the grammar's nodes have none)


def syntax_issues(text: str, language: str | None) -> list[SyntaxIssue] | None:
    """The innermost ERROR and all MISSING nodes of ``text``; None when no grammar loads."""
    parser = get_parser(language)
    if parser is None:
        return None
    data = text.encode("utf-8", "surrogatepass")
    tree = parser.parse(data)
    root = tree.root_node
    if not root.has_error:
        return []
    ascii_text = len(data) == len(text)

    def char(b: int) -> int:
        return b if ascii_text else len(data[:b].decode("utf-8", "ignore"))

    issues: list[SyntaxIssue] = []
    stack = [root]
    visited = 0
    while stack and visited < MAX_NODES:
        node = stack.pop()
        visited += 1
        if node.is_missing:
            issues.append(SyntaxIssue(char(node.start_byte), char(node.end_byte), True))
            continue
        if not node.has_error:
            continue
        inner = [c for c in node.children if c.has_error or c.is_missing]
        if node.is_error and not inner:
            issues.append(SyntaxIssue(char(node.start_byte), char(node.end_byte), False))
        stack.extend(inner)
    return sorted(issues, key=lambda i: (i.start, i.end))


def compiler_issue(text: str, header: str | None = None) -> SyntaxIssue | None:
    """The first error Python's own parser finds in ``text``, or None.

    Tree-sitter's grammar accepts what the interpreter refuses: a block with no body, an
    unexpected or unmatched indent, a ``try`` without ``except``. A window that starts indented
    (inside a class, say) gets a header of ``if 1:`` lines that opens every indentation level it
    uses first, so that its own indentation is not the first error (``header``: those lines, when
    they are to come from other text: a fill must not open the levels it dedents to)."""
    header = indent_header(text) if header is None else header
    source = header + text
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
    except SyntaxError as exc:
        starts = [0]
        for line in source.split("\n"):
            starts.append(starts[-1] + len(line) + 1)

        def offset(line: int | None, col: int | None) -> int:
            line = min(max(line or 1, 1), len(starts) - 1)
            return min(max(starts[line - 1] + max((col or 1) - 1, 0) - len(header), 0), len(text))

        start = offset(exc.lineno, exc.offset)
        end = offset(exc.end_lineno, exc.end_offset) if exc.end_lineno else start
        # the message names lines ("after 'if' statement on line 40"), which a fill moves
        return SyntaxIssue(start, max(start, end), False, re.sub(r"\d+", "#", str(exc.msg)))
    except (ValueError, RecursionError, MemoryError):  # a null byte, nesting too deep to parse
        return SyntaxIssue(0, len(text), False, "unparsable")
    return None


def indent_header(text: str) -> str:
    """``if 1:`` lines that open the indentation levels ``text`` dedents to below its first line."""
    lines = [ln for ln in text.split("\n") if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return ""
    first = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
    if not first:
        return ""
    levels = {ln[: len(ln) - len(ln.lstrip())] for ln in lines}
    outer = sorted({w for w in levels if len(w) < len(first)} | {""}, key=len)
    return "".join(w + "if 1:\n" for w in outer)


@dataclass(frozen=True)
class Spliced:
    """A window with fills in it: the text and each fill's character range."""

    text: str
    fills: tuple[tuple[int, int], ...]


def splice(fixed: Sequence[str], fills: Sequence[str]) -> Spliced:
    """``fixed[0] + fills[0] + fixed[1] + ... + fills[-1] + fixed[-1]``, with the fills' ranges."""
    assert len(fixed) == len(fills) + 1
    parts: list[str] = [fixed[0]]
    ranges: list[tuple[int, int]] = []
    pos = len(fixed[0])
    for fill, after in zip(fills, fixed[1:], strict=True):
        ranges.append((pos, pos + len(fill)))
        pos += len(fill) + len(after)
        parts += [fill, after]
    return Spliced("".join(parts), tuple(ranges))


def new_issues(fixed: Sequence[str], fills: Sequence[str], language: str | None,
               baseline: Sequence[str] | None = None, *, strict_holes: bool = True) -> list[SyntaxIssue] | None:
    """The issues of the filled window that the window with ``baseline`` in the fills' places
    (default: empty, the empty-filled window) does not have at the same place; None when no
    grammar loads. An issue that touches a fill is always new, unless ``baseline`` is given and
    its text there already had one (a rewrite of broken code that stays broken brought nothing
    in). New issues in the fixed text count too: an unclosed bracket in a fill shows up where the
    parser gives up, after it. For Python, the first error of Python's own parser counts too
    (`compiler_issue`). With ``strict_holes`` (repair's view) Python's error right after a hole
    counts even when the baseline has it (a blank fill leaves a block without its body); without
    (the gate's view: nothing is worse than the code as it was) it does not."""
    filled = splice(fixed, fills)
    issues = syntax_issues(filled.text, language)
    if issues is None:
        return None
    before = splice(fixed, baseline if baseline is not None else [""] * len(fills))
    strict = (_compiler_issues(fixed, filled, before, baseline, strict_holes)
              if normalize_language(language) == "python" else [])
    if not issues:
        return strict
    old_issues = _baseline_issues(before.text, language)
    known = {_key(i) for i in old_issues}
    broken = {k for k, (a, b) in enumerate(before.fills)
              if baseline is not None and any(i.start <= b and i.end >= a for i in old_issues)}
    return sorted([i for i in issues if not _old(i, filled, before, known, broken)] + strict,
                  key=lambda i: (i.start, i.end))


@functools.lru_cache(maxsize=32)
def _baseline_issues(text: str, language: str | None) -> tuple[SyntaxIssue, ...]:
    """`syntax_issues` of a window without its fills: the same window comes back for every
    candidate of every repair round."""
    return tuple(syntax_issues(text, language) or [])


# Lines cut from a window's head, or errors looked for in its tail, before Python's parser gets
# past what the window cut into.
MAX_CUTS = 64


def _compiler_issues(fixed: Sequence[str], filled: Spliced, before: Spliced,
                     baseline: Sequence[str] | None, strict_holes: bool = True) -> list[SyntaxIssue]:
    """Python's parser's first error in the filled window, when the window is not to blame.

    Python reports one error only, and a window cut from a file often starts or ends inside a
    construct. So: an error before the first fill that the window without the fills has too (it
    starts inside a docstring or a bracket) cuts the head a line past it and the parse goes on;
    an error in the window's own broken tail (`_tail_start`) is the window's; an error after
    the fills is the window's when the window without the fills (or with ``x`` in them: an
    hole that leaves a block without its body, say, is not the window's) has it at the same place."""
    first = before.fills[0][0]
    floor = before.text.rfind("\n", 0, first) + 1  # never cut into the hole's line
    head = 0
    for _ in range(MAX_CUTS):
        header = indent_header(before.text[head:])
        issue = _first_error(filled.text, head, header)
        if issue is None:
            return []
        if issue.start >= first:
            break
        if _first_error(before.text, head, header) != issue:
            return [issue]  # an error before the fill that only the fill brings
        head = before.text.find("\n", issue.end) + 1
        if head == 0 or head > floor:
            return []  # the parser never reaches the fill: it cannot judge it
    else:
        return []
    place = _fixed_place(issue, filled)
    if place is None:  # in or at a fill: the fill's, unless the baseline there was broken too
        old = _first_error(before.text, head, header)
        excused = baseline is not None and old is not None and _fixed_place(old, before) is None
        # the gate's view: only the same error at the fill is the baseline's
        return [] if excused and (strict_holes or (old is not None and old.message == issue.message)) else [issue]
    if issue.start >= len(filled.text) - len(fixed[-1]) + _tail_start(fixed[-1]):
        return []
    old = _first_error(before.text, head, header)
    if old is None or old.message != issue.message or _fixed_place(old, before) != place:
        return [issue]
    # the same error as without the fills: the window's, unless it sits right after a hole (a
    # block whose body the hole was, which an empty hole leaves without one)
    if not strict_holes:
        return []
    text = "".join(fixed)
    ends = [len("".join(fixed[: k + 1])) for k in range(len(fixed) - 1)]
    return [issue] if any("\n" not in text[e: place[0]].strip() for e in ends if e <= place[0]) else []


def _first_error(text: str, head: int, header: str | None = None) -> SyntaxIssue | None:
    """`compiler_issue` of ``text`` from ``head`` on, in ``text``'s offsets."""
    found = _cached_issue(text[head:], header)
    return None if found is None else SyntaxIssue(found.start + head, found.end + head, False, found.message)


@functools.lru_cache(maxsize=256)
def _cached_issue(text: str, header: str | None = None) -> SyntaxIssue | None:
    return compiler_issue(text, header)  # the windows without fills come back every round


@functools.lru_cache(maxsize=32)
def _tail_start(last: str) -> int:
    """Where the broken tail of the text after the last hole starts (``len(last)``: none).

    The lines after the hole's own are parsed alone, less the first ones while the error is on
    the first (they continue what the hole is in: an ``elif``, a bracket's items): while they
    have an error (a block cut before its body, a bracket closed past the window), the tail
    starts at that error's line (at the last line before it when the error is at the end)."""
    body = last.find("\n") + 1  # the lines after the hole's own
    if body == 0:
        return len(last)
    region = last[body:]
    head = 0  # the body's first lines may continue what the hole is in (`elif`, a bracket's items)
    for _ in range(MAX_CUTS):
        issue = _cached_issue(region[head:])
        line_end = region.find("\n", head) + 1
        if issue is None or line_end == 0 or head + issue.start >= line_end:
            break
        head = line_end
    end = len(region)
    for _ in range(MAX_CUTS):
        issue = _first_error(region[:end], head)
        if issue is None:
            break
        line = region.rfind("\n", 0, issue.start) + 1
        if not region[line:end].strip() or line >= end:  # at the end: the last line before it
            line = region.rstrip().rfind("\n", 0, max(0, min(issue.start, end) - 1)) + 1
        if line >= end or line < head:
            break
        end = line
    return body + end


def _fixed_place(issue: SyntaxIssue, spliced: Spliced) -> tuple[int, int] | None:
    """Where ``issue`` sits in the fixed text alone (the window without fills), or None when it
    touches a fill."""
    shift_start = shift_end = 0
    for a, b in spliced.fills:
        if issue.start <= b and issue.end >= a:
            return None
        if b <= issue.start:
            shift_start += b - a
        if b <= issue.end:
            shift_end += b - a
    return issue.start - shift_start, issue.end - shift_end


def _key(issue: SyntaxIssue | None) -> tuple[int, int, bool] | None:
    return None if issue is None else (issue.start, issue.end, issue.missing)


def _old(issue: SyntaxIssue, filled: Spliced, before: Spliced, known: set[tuple[int, int, bool] | None],
         broken: set[int]) -> bool:
    """Whether the window before the fills has this issue at the same place, and it is not the fills'.

    An issue inside a fill or cutting through one is the fill's (unless that fill's baseline text
    was ``broken`` too). One that wraps a fill is the surroundings' only when it spans whole lines
    on both sides of it (tree-sitter's recovery around a construct the window cuts); wrapping just
    the hole's line, the empty hole may be the cause (``y = f(<hole>``) and a fill that parses is
    the point."""
    text = filled.text
    shift_start = shift_end = 0
    for k, ((a, b), (a0, b0)) in enumerate(zip(filled.fills, before.fills, strict=True)):
        if issue.start <= b and issue.end >= a:  # touches this fill
            if k in broken:
                return True
            wraps = issue.start <= a and issue.end >= b
            if not wraps or "\n" not in text[issue.start: a] or "\n" not in text[b: issue.end]:
                return False
        grown = (b - a) - (b0 - a0)
        if b <= issue.start:
            shift_start += grown
        if b <= issue.end:
            shift_end += grown
    return (issue.start - shift_start, issue.end - shift_end, issue.missing) in known
