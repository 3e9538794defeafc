"""The language server's document sync: SyncedDocument applies incremental changes and maps
positions exactly as pygls' own TextDocument does (random edits, astral and non-ASCII text, every
position encoding), while its work per keystroke does not grow with the file."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.workspace import PositionCodec, TextDocument

from diffgemma.context.positions import utf16_col_to_offset
from diffgemma.lsp.text_sync import LineAnchor, SyncedDocument

PIECES = st.sampled_from(["a", "é", "😀", "\n", " ", "def f():\n", "\t", "\r\n", "ü😀x", "\r", "\u2028"])
TEXTS = st.lists(PIECES, max_size=30).map("".join)
ENCODINGS = st.sampled_from([types.PositionEncodingKind.Utf16, types.PositionEncodingKind.Utf32,
                             types.PositionEncodingKind.Utf8])


def pair(text: str, encoding: types.PositionEncodingKind) -> tuple[TextDocument, SyncedDocument]:
    codec = PositionCodec(encoding=encoding)
    return (TextDocument("file:///a.py", text, version=1, position_codec=codec),
            SyncedDocument("file:///a.py", text, version=1, position_codec=codec))


def client_position(doc: TextDocument, line: int, char: int) -> types.Position:
    """A position the client could send: on a line of the document, a column inside it (in the
    client's units, from pygls' own codec)."""
    lines = doc.lines or [""]
    line = min(line, len(lines) - 1)
    char = min(char, len(lines[line].rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")))
    return doc.position_codec.position_to_client_units(lines, types.Position(line=line, character=char))


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, encoding=ENCODINGS,
       edits=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 12), st.integers(0, 8), st.integers(0, 12),
                                TEXTS), max_size=8))
def test_changes_and_positions_match_pygls(text: str, encoding: types.PositionEncodingKind,
                                           edits: list[tuple[int, int, int, int, str]]) -> None:
    plain, synced = pair(text, encoding)
    for l1, c1, l2, c2, new in edits:
        start, end = client_position(plain, l1, c1), client_position(plain, l2, c2)
        if (end.line, end.character) < (start.line, start.character):
            start, end = end, start
        change = types.TextDocumentContentChangePartial(range=types.Range(start=start, end=end), text=new)
        plain.apply_change(change)
        synced.apply_change(change)
        assert synced.source == plain.source
        for line, char in ((l1, c1), (l2, c2), (0, 0)):
            position = client_position(plain, line, char)
            assert synced.offset_of(position) == plain.offset_at_position(position)
            if encoding == types.PositionEncodingKind.Utf16 and synced.plain_lines:
                assert synced.offset_of(position) == utf16_col_to_offset(plain.source, position.line,
                                                                         position.character)


def test_positions_past_the_end_clamp_like_lsp() -> None:
    _, synced = pair("ab\ncd", types.PositionEncodingKind.Utf16)
    assert synced.offset_of(types.Position(line=0, character=99)) == 2  # the line's end
    assert synced.offset_of(types.Position(line=7, character=0)) == 5  # the buffer's end
    synced.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(start=types.Position(line=1, character=2), end=types.Position(line=1, character=2)),
        text="e\nf"))
    assert synced.source == "ab\ncde\nf" and synced.offset_of(types.Position(line=2, character=1)) == 8


class CountingText(str):
    """A text that counts the line searches made in it."""

    searches = 0

    def find(self, *args: object) -> int:  # type: ignore[override]
        CountingText.searches += 1
        return super().find(*args)  # type: ignore[arg-type]

    def rfind(self, *args: object) -> int:  # type: ignore[override]
        CountingText.searches += 1
        return super().rfind(*args)  # type: ignore[arg-type]


def test_finding_the_typed_line_does_not_walk_the_file() -> None:
    """The work per keystroke does not grow with the file: once a line is found, finding it (or
    its neighbour) again takes a search or two, not one per line before it (the benchmark
    benchmarks/bench_lsp_typing.py measures the time)."""
    text = CountingText("def f(x):\n    return x + 1\n" * 75_000)  # 2 MB, 150,000 lines
    anchor = LineAnchor()
    anchor.start_of(text, 100_000)  # the first look walks there once
    CountingText.searches = 0
    for line in (100_000, 100_001, 100_000, 99_999):
        start = anchor.start_of(text, line)
        assert start == len("".join(str(text).split("\n")[:line])) + line
    assert CountingText.searches <= 4


def test_a_big_file_changed_elsewhere_is_shown_around_its_change(tmp_path: Path) -> None:
    """Typing in one file asks for the recent changes of another: a 2 MB buffer being edited is
    outlined only around its change (not parsed whole on each keystroke), its definition found."""
    from diffgemma.context.crossfile import RecentChange, Workspace, _outline_near, crossfile_snippets

    big = "".join(f"def helper_{i}(values):\n    return [v * {i} for v in values]\n\n\n" for i in range(40_000))
    path = tmp_path / "big.py"
    workspace = Workspace(tmp_path)
    workspace.remember(path, big)
    at = big.index("def helper_20000(")
    edited = big[:at] + "def helper_20000(values, scale=2):" + big[big.index("\n", at):]
    workspace.note_change(path, edited)
    change = workspace.recent()[0]
    near = _outline_near(change.path, edited, change.span)
    assert len(near) < 500 and all(edited[it.start: it.end] == it.text for it in near)
    snippets = crossfile_snippets(tmp_path, tmp_path / "small.py", "x = 1\n", 2000, language="python",
                                  recent=[change])
    assert snippets and snippets[0][0] == "big.py" and "def helper_20000(values, scale=2):" in snippets[0][1]
    assert isinstance(change, RecentChange)
