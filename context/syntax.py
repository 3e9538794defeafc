"""Syntax errors of a filled window, and which of them a fill brought in (torch-free).

The engine's repair step asks: after splicing the fills into the window around them, does the
text have ERROR or MISSING nodes that the window without the fills did not have? The window a
front end cuts often does not parse on its own (it starts or ends inside a construct), so the
question is always relative to the empty fill: errors that lie wholly in the fixed text, at the
same place as without the fills, belong to the surroundings and are not the fill's doing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from diffgemma.context.languages import get_parser

# Tree-sitter's error recovery can walk a pathological buffer for long; the repair is an
# optional refinement, so a parse is abandoned past this (microseconds).
PARSE_TIMEOUT_US = 200_000
MAX_NODES = 20_000


@dataclass(frozen=True)
class SyntaxIssue:
    """An innermost ERROR node or a MISSING node, as character offsets into the parsed text."""

    start: int
    end: int
    missing: bool


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
               baseline: Sequence[str] | None = None) -> list[SyntaxIssue] | None:
    """The issues of the filled window that the window with ``baseline`` in the fills' places
    (default: empty, the empty-filled window) does not have at the same place; None when no
    grammar loads. An issue that touches a fill is always new, unless ``baseline`` is given and
    its text there already had one (a rewrite of broken code that stays broken brought nothing
    in). New issues in the fixed text count too: an unclosed bracket in a fill shows up where the
    parser gives up, after it."""
    filled = splice(fixed, fills)
    issues = syntax_issues(filled.text, language)
    if issues is None:
        return None
    if not issues:
        return []
    before = splice(fixed, baseline if baseline is not None else [""] * len(fills))
    old_issues = syntax_issues(before.text, language) or []
    known = {_key(i) for i in old_issues}
    broken = {k for k, (a, b) in enumerate(before.fills)
              if baseline is not None and any(i.start <= b and i.end >= a for i in old_issues)}
    return [i for i in issues if not _old(i, filled, before, known, broken)]


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
