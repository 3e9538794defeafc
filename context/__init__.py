"""diffgemma.context: the text a front end sends around a cursor or a selection (torch-free).

`cursor_window` / `selection_window` pick the prefix and suffix on tree-sitter boundaries,
`detect_language` names the grammar, the position helpers convert CLI and LSP positions, and
`crossfile.Workspace` gathers snippets from imported and recently changed files.
"""

from diffgemma.context.languages import detect_language, has_grammar, normalize_language
from diffgemma.context.positions import (
    PositionError,
    offset_to_position,
    offset_to_utf16_position,
    position_to_offset,
    utf16_col_to_offset,
)
from diffgemma.context.window import ContextWindow, cursor_window, selection_window

__all__ = [
    "ContextWindow",
    "PositionError",
    "cursor_window",
    "detect_language",
    "has_grammar",
    "normalize_language",
    "offset_to_position",
    "offset_to_utf16_position",
    "position_to_offset",
    "selection_window",
    "utf16_col_to_offset",
]
