"""What recent edits changed, read from their unified diffs (torch-free).

A next-edit suggestion follows from the edits just made: a name changed on one line is still the
old name elsewhere, a function that gained a parameter still has callers that do not pass it.
This module reads a unified diff (``git diff`` output, or an editor's record of a change) into
hunks, and each hunk into the names it changed: the token sequences of its removed and added
lines are aligned, and an identifier replaced by one identifier is a rename; a parameter list that
gained a name is an added parameter. Nothing here needs a grammar; `edit_places` finds where the
consequences lie in a document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from difflib import SequenceMatcher

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_TOKEN = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*|\s+|.")
IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
# A line that defines a function or a class named right after the keyword (most languages).
_DEFINITION = re.compile(r"^\s*(?:export\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:static\s+)?"
                         r"(def|function|fn|func|fun|sub|class|struct|interface)\s+([A-Za-z_$][A-Za-z0-9_$]*)")
# Words that are never a renamed thing (a keyword swapped for another is not a rename).
_KEYWORDS = frozenset({
    "and", "as", "assert", "async", "await", "break", "case", "catch", "class", "const", "continue", "def",
    "del", "elif", "else", "enum", "except", "export", "extends", "false", "final", "finally", "fn", "for",
    "from", "func", "function", "global", "if", "impl", "import", "in", "is", "lambda", "let", "match", "mut",
    "new", "nil", "none", "null", "nonlocal", "not", "or", "pass", "pub", "raise", "return", "self", "static",
    "struct", "super", "switch", "this", "throw", "true", "try", "type", "var", "while", "with", "yield",
    "None", "True", "False",
})
# Parameters that callers never pass by position.
_NOT_PASSED = frozenset({"self", "cls", "this", "*", "/"})


@dataclass(frozen=True)
class Hunk:
    """One hunk: the lines it removed and added, and where each change sits on the new side
    (0-based lines: an added line's own, a removed line's where the lines after it now start)."""

    removed: tuple[str, ...]
    added: tuple[str, ...]
    added_at: tuple[int, ...]
    removed_at: tuple[int, ...]

    def line_of_added(self, index: int) -> int | None:
        """The new side's line of the ``index``-th added line."""
        return self.added_at[index] if 0 <= index < len(self.added_at) else None


@dataclass(frozen=True)
class Rename:
    """``old`` became ``new``; ``definition``: on a line that defines it (a function, a class)."""

    old: str
    new: str
    definition: bool
    path: str
    line: int | None  # the new side's line of the change (0-based), when known


@dataclass(frozen=True)
class AddedParameter:
    """``function`` gained parameters; callers passing fewer than ``required`` arguments lag behind."""

    function: str
    added: tuple[str, ...]
    required: int
    path: str
    line: int | None


@dataclass
class Changes:
    """What a list of recent edits changed, newest last."""

    renames: list[Rename] = field(default_factory=list)
    parameters: list[AddedParameter] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.renames or self.parameters)


def parse_hunks(diff: str) -> list[Hunk]:
    """The hunks of a unified diff (file headers and other lines are skipped)."""
    hunks: list[Hunk] = []
    lines = diff.split("\n")
    i = 0
    while i < len(lines):
        match = _HUNK.match(lines[i])
        i += 1
        if match is None:
            continue
        new_start = int(match.group(3))
        old_len = int(match.group(2)) if match.group(2) is not None else 1
        new_len = int(match.group(4)) if match.group(4) is not None else 1
        removed: list[str] = []
        added: list[str] = []
        added_at: list[int] = []
        removed_at: list[int] = []
        # a zero-length new side (a pure deletion) names the line before it
        pos = new_start - 1 if new_len else new_start
        seen_old = seen_new = 0
        while i < len(lines) and (seen_old < old_len or seen_new < new_len):
            line = lines[i]
            if line.startswith("\\"):
                i += 1
                continue
            if not line and i == len(lines) - 1:
                break  # the diff's final newline
            mark, body = (line[:1], line[1:]) if line else (" ", "")
            if mark == "-":
                removed.append(body)
                removed_at.append(max(pos, 0))
                seen_old += 1
            elif mark == "+":
                added.append(body)
                added_at.append(pos)
                pos += 1
                seen_new += 1
            elif mark == " ":
                pos += 1
                seen_old += 1
                seen_new += 1
            else:
                break
            i += 1
        hunks.append(Hunk(removed=tuple(removed), added=tuple(added), added_at=tuple(added_at),
                          removed_at=tuple(removed_at)))
    return hunks


def tokens(text: str) -> list[str]:
    """Identifiers, runs of whitespace and single other characters."""
    return _TOKEN.findall(text)


def _identifier(token: str) -> bool:
    return IDENTIFIER.fullmatch(token) is not None and token not in _KEYWORDS


def _definition_names(lines: Iterable[str]) -> set[str]:
    return {m.group(2) for line in lines if (m := _DEFINITION.match(line))}


def hunk_renames(hunk: Hunk, path: str) -> list[Rename]:
    """Identifiers the hunk replaced one for one (the same pair counted once)."""
    old, new = tokens("\n".join(hunk.removed)), tokens("\n".join(hunk.added))
    defined = _definition_names(hunk.added)
    found: dict[tuple[str, str], Rename] = {}
    for op, a1, a2, b1, b2 in SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op != "replace":
            continue
        before = [t for t in old[a1:a2] if not t.isspace()]
        after = [t for t in new[b1:b2] if not t.isspace()]
        if len(before) == len(after) == 1 and _identifier(before[0]) and _identifier(after[0]):
            pair = (before[0], after[0])
            if pair not in found:
                line = hunk.line_of_added(_line_of(new, b1))
                found[pair] = Rename(old=pair[0], new=pair[1], definition=pair[1] in defined, path=path, line=line)
    return list(found.values())


def _line_of(toks: list[str], index: int) -> int:
    return sum(t.count("\n") for t in toks[:index])


def split_parameters(text: str) -> list[str]:
    """The top-level comma-separated items of a parameter list's inside."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return [item for item in items if item]


def parameter_list(source: str, name: str) -> list[str] | None:
    """The parameters of the definition of ``name`` in ``source`` (its first ``name(...)``)."""
    match = re.search(rf"\b{re.escape(name)}\s*\(", source)
    if match is None:
        return None
    depth = 0
    start = match.end()
    for i in range(match.end() - 1, len(source)):
        if source[i] == "(":
            depth += 1
        elif source[i] == ")":
            depth -= 1
            if depth == 0:
                return split_parameters(source[start:i])
    return None


def _parameter_name(item: str) -> str:
    match = IDENTIFIER.search(item.lstrip("*&"))
    return match.group(0) if match else item


def hunk_parameters(hunk: Hunk, path: str) -> list[AddedParameter]:
    """Functions the hunk defined on both sides whose parameter list gained required names."""
    out: list[AddedParameter] = []
    before, after = "\n".join(hunk.removed), "\n".join(hunk.added)
    for name in _definition_names(hunk.removed) & _definition_names(hunk.added):
        old, new = parameter_list(before, name), parameter_list(after, name)
        if old is None or new is None:
            continue
        old_names = {_parameter_name(p) for p in old}
        passed = [p for p in new if _parameter_name(p) not in _NOT_PASSED and not p.startswith("*")]
        was_passed = [p for p in old if _parameter_name(p) not in _NOT_PASSED and not p.startswith("*")]
        # a list as long as before renamed a parameter (`hunk_renames`); a longer one gained some
        grown = len(passed) - len(was_passed)
        fresh = [_parameter_name(p) for p in passed if _parameter_name(p) not in old_names and "=" not in p]
        added = tuple(fresh[:grown]) if grown > 0 else ()
        if added:
            required = sum(1 for p in passed if "=" not in p)
            out.append(AddedParameter(function=name, added=added, required=required, path=path,
                                      line=hunk.line_of_added(_first_line_defining(hunk.added, name))))
    return out


def _first_line_defining(lines: Iterable[str], name: str) -> int:
    for i, line in enumerate(lines):
        match = _DEFINITION.match(line)
        if match and match.group(2) == name:
            return i
    return 0


def changes(edits: Iterable[tuple[str, str]]) -> Changes:
    """The renames and added parameters of ``(path, diff)`` edits, newest last. A name renamed back
    and forth keeps its last rename; a rename the user undid (``a -> b`` then ``b -> a``) cancels."""
    out = Changes()
    for path, diff in edits:
        for hunk in parse_hunks(diff):
            for rename in hunk_renames(hunk, path):
                undone = [r for r in out.renames if r.old == rename.new and r.new == rename.old]
                out.renames = [r for r in out.renames if r not in undone and r.old != rename.old]
                if not undone:
                    out.renames.append(rename)
            for added in hunk_parameters(hunk, path):
                out.parameters = [p for p in out.parameters if p.function != added.function]
                out.parameters.append(added)
    return out


def changed_lines(diff: str) -> list[int]:
    """The new side's lines (0-based) each hunk of ``diff`` added or changed."""
    lines: set[int] = set()
    for hunk in parse_hunks(diff):
        lines.update(hunk.added_at)
        lines.update(hunk.removed_at)
    return sorted(lines)
