"""The CLI's file handling, positions, config and watch-marker parsing (no daemon needed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from diffgemma.cli import fileio
from diffgemma.cli import options as opt
from diffgemma.cli.errors import FileChanged, FileProblem, OutOfRange, UsageProblem
from diffgemma.cli.watch_cmd import block_lines, instruction_pattern

# --- reading ----------------------------------------------------------------------------------


def test_read_source_rejects_missing_directory_binary_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(FileProblem, match="no such file"):
        fileio.read_source(tmp_path / "missing.py")
    with pytest.raises(FileProblem, match="is a directory"):
        fileio.read_source(tmp_path)
    (tmp_path / "b.bin").write_bytes(b"abc\x00def")
    with pytest.raises(FileProblem, match="binary"):
        fileio.read_source(tmp_path / "b.bin")
    (tmp_path / "l.py").write_bytes(b"x = 1\ny = '\xe9'\n")
    with pytest.raises(FileProblem, match=r"not valid UTF-8 \(line 2\)"):
        fileio.read_source(tmp_path / "l.py")


def test_crlf_files_are_normalised_for_editing_and_written_back_as_crlf(tmp_path: Path) -> None:
    path = tmp_path / "w.py"
    path.write_bytes(b"a = 1\r\nb = 2\r\n")
    source = fileio.read_source(path)
    assert source.text == "a = 1\nb = 2\n" and source.newline == "\r\n"
    fileio.write_source(source, "a = 1\nc = 3\nb = 2\n")
    assert path.read_bytes() == b"a = 1\r\nc = 3\r\nb = 2\r\n"


def test_mixed_line_endings_and_bom_are_kept_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    original = b"\xef\xbb\xbfa = 1\r\nb = 2\nc = 3\n"
    path.write_bytes(original)
    source = fileio.read_source(path)
    assert source.text == "a = 1\r\nb = 2\nc = 3\n" and source.bom
    fileio.write_source(source, source.text + "d = 4\n")
    assert path.read_bytes() == original + b"d = 4\n"
    assert fileio.backup_path(path).read_bytes() == original


# --- writing ----------------------------------------------------------------------------------


def test_write_is_atomic_keeps_mode_and_backup_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "k.py"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    source = fileio.read_source(path)
    inode_before = path.stat().st_ino
    saved = fileio.write_source(source, "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode_before  # replaced by rename, not rewritten in place
    assert saved == tmp_path / "k.py.diffgemma.bak" and saved.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.py", "k.py.diffgemma.bak"]


def test_write_without_backup(tmp_path: Path) -> None:
    path = tmp_path / "n.py"
    path.write_text("x\n")
    assert fileio.write_source(fileio.read_source(path), "y\n", backup=False) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.py"]


@pytest.mark.parametrize("change", ["append", "same_size", "delete", "touch"])
def test_write_refuses_when_the_file_changed_since_it_was_read(tmp_path: Path, change: str) -> None:
    path = tmp_path / "c.py"
    path.write_text("value = 1\n")
    source = fileio.read_source(path)
    if change == "append":
        path.write_text("value = 1\nmore = 2\n")
    elif change == "same_size":
        path.write_text("value = 2\n")
    elif change == "delete":
        path.unlink()
    else:
        os.utime(path, ns=(source.snapshot.mtime_ns + 10**9, source.snapshot.mtime_ns + 10**9))
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(FileChanged, match="changed since it was read"):
        fileio.write_source(source, "value = 99\n")
    assert (path.read_bytes() if path.exists() else None) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if before is None else ["c.py"])


def test_write_hook_runs_right_before_the_check(tmp_path: Path) -> None:
    path = tmp_path / "h.py"
    path.write_text("a\n")
    source = fileio.read_source(path)
    fileio.before_commit_hooks.append(lambda p: p.write_text("edited meanwhile\n"))
    try:
        with pytest.raises(FileChanged):
            fileio.write_source(source, "b\n")
    finally:
        fileio.before_commit_hooks.clear()
    assert path.read_text() == "edited meanwhile\n"


# --- positions --------------------------------------------------------------------------------

TEXT = "def f(x):\n    \n    return x  \n"


def test_parse_target(tmp_path: Path) -> None:
    assert fileio.parse_target("a.py:3") == ("a.py", 3, None)
    assert fileio.parse_target("a.py:3:7") == ("a.py", 3, 7)
    assert fileio.parse_target("dir/a.py") == ("dir/a.py", None, None)
    odd = tmp_path / "x:1"
    odd.write_text("")
    assert fileio.parse_target(str(odd)) == (str(odd), None, None)  # an existing name wins
    with pytest.raises(UsageProblem, match="malformed position"):
        fileio.parse_target(f"{odd}:x")
    with pytest.raises(OutOfRange, match="start at 1"):
        fileio.parse_target("a.py:0")


def test_default_column_rule() -> None:
    # blank/indent-only line: after the indentation; otherwise after the last non-blank char
    assert fileio.position_offset(TEXT, 2, None) == (len("def f(x):\n    "), fileio.Position(2, 5))
    offset, pos = fileio.position_offset(TEXT, 3, None)
    assert TEXT[:offset].endswith("return x") and pos == fileio.Position(3, 13)
    assert fileio.position_offset(TEXT, 1, None)[1] == fileio.Position(1, 10)
    assert fileio.position_offset(TEXT, 4, None) == (len(TEXT), fileio.Position(4, 1))


def test_positions_out_of_range() -> None:
    with pytest.raises(OutOfRange, match="line 5 is out of range"):
        fileio.position_offset(TEXT, 5, None)
    with pytest.raises(OutOfRange, match="column 11 is out of range"):
        fileio.position_offset(TEXT, 1, 11)
    assert fileio.position_offset(TEXT, 1, 10)[0] == 9  # column len+1: end of the line


def test_selections() -> None:
    text = "one\ntwo\nthree\nfour\n"
    start, end, first, last = fileio.selection_offsets(text, "2-3")
    assert text[start:end] == "two\nthree"
    assert (first, last) == (fileio.Position(2, 1), fileio.Position(3, 6))
    start, end, _, _ = fileio.selection_offsets(text, "2:2-3:3")
    assert text[start:end] == "wo\nth"
    start, end, _, _ = fileio.selection_offsets(text, "3:2-3")
    assert text[start:end] == "hree"
    for bad in ("2", "a-b", "2-", "1:2:3-4", "-3"):
        with pytest.raises(UsageProblem, match="malformed selection"):
            fileio.selection_offsets(text, bad)
    with pytest.raises(OutOfRange, match="line 9 is out of range"):
        fileio.selection_offsets(text, "2-9")
    with pytest.raises(OutOfRange, match="ends before it starts"):
        fileio.selection_offsets(text, "3-2")
    with pytest.raises(OutOfRange, match="column 9"):
        fileio.selection_offsets(text, "1:9-2")


def test_marker_pieces() -> None:
    assert fileio.marker_pieces("a<FILL>b", "<FILL>", "stdin") == ["a", "b"]
    assert fileio.marker_pieces("<FILL>x<FILL>", "<FILL>", "stdin") == ["", "x", ""]
    with pytest.raises(OutOfRange, match="no <FILL> marker"):
        fileio.marker_pieces("ab", "<FILL>", "stdin")
    with pytest.raises(OutOfRange, match="at most 32 holes"):
        fileio.marker_pieces("<FILL>" * 33, "<FILL>", "stdin")


# --- config -----------------------------------------------------------------------------------


def test_config_file_fills_what_flags_and_env_leave_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFGEMMA_CONFIG_DIR", str(tmp_path))
    assert opt.resolve().marker == "<FILL>"  # no config file: defaults
    (tmp_path / "config.toml").write_text(
        'marker = "@@"\nsteps = 7\nsocket = "~/s.sock"\n[daemon]\nkeep_alive = 5\n'
    )
    settings = opt.resolve(steps=3)
    assert (settings.marker, settings.sampling.steps, settings.sampling.max_tokens) == ("@@", 3, None)
    assert settings.sources == {**settings.sources, "marker": "config", "steps": "flag/env",
                                "max_tokens": "default"}
    assert settings.socket == os.path.expanduser("~/s.sock")


@pytest.mark.parametrize(
    ("body", "message"),
    [("steps = 'many'\n", "'steps' must be int"), ("colour = 1\n", "unknown key 'colour'"),
     ("steps = \n", "bad config file")],
)
def test_bad_config_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str,
                                     message: str) -> None:
    monkeypatch.setenv("DIFFGEMMA_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text(body)
    with pytest.raises(UsageProblem, match=message):
        opt.resolve()


# --- watch markers and blocks -------------------------------------------------------------------


def test_instruction_lines_use_the_language_comment_token() -> None:
    py = instruction_pattern("python")
    match = py.search("x = 1\n    # diffgemma: add a cache\ndef f():\n")
    assert match is not None and match.group(0).strip() == "# diffgemma: add a cache"
    assert py.search("// diffgemma: nope\n") is None
    c = instruction_pattern("c")
    assert c.search("/* diffgemma: unroll */\n") is not None
    assert instruction_pattern("lua").search("-- diffgemma: memoize\n") is not None
    assert instruction_pattern(None).search("; diffgemma: any token\n") is not None
    assert py.search("print('# diffgemma: inside a string')\n") is None  # not a line of its own


def test_block_is_the_syntactic_node_or_the_paragraph() -> None:
    python = "def f(x):\n    y = x\n\n    return y\n\n\nz = 1\nw = 2\n\nq = 3\n"
    assert block_lines(python, 0, "python") == 3  # the whole function, blank line inside
    assert block_lines(python, 6, "python") == 7  # a one-line statement: its paragraph
    js = "function f(a) {\n  if (a) {\n    return 1;\n  }\n  return 2;\n}\nconst z = 3;\n"
    assert block_lines(js, 0, "javascript") == 5
    assert block_lines(js, 1, "javascript") == 3
    # No grammar: indentation and paragraphs.
    assert block_lines(js, 0, None) == 5
    assert block_lines("a\n  b\n\n  c\nd\n", 0, None) == 3
