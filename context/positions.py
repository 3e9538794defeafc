"""Line/column positions <-> string offsets, for the CLI (1-based) and LSP (0-based, UTF-16).

Offsets are Python string indices (code points). Lines end at "\\n" ("\\r\\n" works: the "\\r"
is the last character of its line). The CLI counts lines and columns from 1 in code points;
LSP counts from 0 and measures columns in UTF-16 code units, where a character outside the
Basic Multilingual Plane (most emoji) counts as two.
"""

from __future__ import annotations


class PositionError(ValueError):
    """A line or column outside the buffer."""


def _line_bounds(text: str, line0: int) -> tuple[int, int]:
    """[start, end) of 0-based line ``line0``, end excluding the newline."""
    if line0 < 0:
        raise PositionError(f"line {line0} is before the start of the buffer")
    start = 0
    for seen in range(line0):
        nl = text.find("\n", start)
        if nl < 0:
            raise PositionError(f"line {line0} is past the end of the buffer ({seen + 1} lines)")
        start = nl + 1
    end = text.find("\n", start)
    return start, len(text) if end < 0 else end


def line_count(text: str) -> int:
    """Number of lines; a trailing newline opens one more (empty) line, as editors show it."""
    return text.count("\n") + 1


def line_text(text: str, line: int, *, base: int = 1) -> str:
    """The text of ``line`` (counted from ``base``) without its newline; PositionError outside."""
    start, end = _line_bounds(text, line - base)
    return text[start:end]


def position_to_offset(text: str, line: int, col: int, *, base: int = 1, clamp: bool = False) -> int:
    """Offset of (line, col) counted from ``base`` (1 for the CLI, 0 for LSP-like callers).

    ``col`` is in code points and may point just past the last character of the line. Out of
    range raises PositionError, or with ``clamp`` moves to the nearest valid position.
    """
    if base not in (0, 1):
        raise ValueError("base must be 0 or 1")
    line0, col0 = line - base, col - base
    if clamp:
        line0 = min(max(line0, 0), line_count(text) - 1)
    start, end = _line_bounds(text, line0)
    if clamp:
        col0 = min(max(col0, 0), end - start)
    elif not 0 <= col0 <= end - start:
        raise PositionError(
            f"column {col} is outside line {line} (valid: {base}..{end - start + base})"
        )
    return start + col0


def offset_to_position(text: str, offset: int, *, base: int = 1) -> tuple[int, int]:
    """(line, col) of ``offset``, both counted from ``base``; col in code points."""
    if not 0 <= offset <= len(text):
        raise PositionError(f"offset {offset} is outside the buffer (0..{len(text)})")
    line0 = text.count("\n", 0, offset)
    col0 = offset - (text.rfind("\n", 0, offset) + 1)
    return line0 + base, col0 + base


def _utf16_len(s: str) -> int:
    if s.isascii():
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def utf16_col_to_offset(text: str, line: int, col: int) -> int:
    """Offset of an LSP position: 0-based ``line``, ``col`` in UTF-16 code units.

    As LSP asks, a column past the end of the line means the end of the line, and a line past
    the end of the buffer means the end of the buffer. A column that falls between the two
    halves of a surrogate pair moves back to the start of that character.
    """
    if line < 0 or col < 0:
        raise PositionError(f"negative position ({line}, {col})")
    if line >= line_count(text):
        return len(text)
    start, end = _line_bounds(text, line)
    seg = text[start:end]
    if seg.isascii():
        return start + min(col, len(seg))
    units = seg.encode("utf-16-le", "surrogatepass")[: 2 * col]
    # Decoding drops a dangling high surrogate, which lands us at the character's start.
    return start + len(units.decode("utf-16-le", "ignore"))


def offset_to_utf16_position(text: str, offset: int) -> tuple[int, int]:
    """LSP position (0-based line, UTF-16 column) of a string offset."""
    if not 0 <= offset <= len(text):
        raise PositionError(f"offset {offset} is outside the buffer (0..{len(text)})")
    line0 = text.count("\n", 0, offset)
    start = text.rfind("\n", 0, offset) + 1
    return line0, _utf16_len(text[start:offset])
