"""Context windows over real code in several languages, with the real tree-sitter grammars."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from conftest import grammars_missing

from diffgemma.context import (
    PositionError,
    cursor_window,
    detect_language,
    offset_to_position,
    offset_to_utf16_position,
    position_to_offset,
    selection_window,
    utf16_col_to_offset,
)
from diffgemma.context.languages import get_parser, has_grammar
from diffgemma.context.parsing import cache_stats, clear_cache, parse
from diffgemma.context.window import clear_caches

DATA = Path(__file__).parent / "data" / "context"


pytestmark = pytest.mark.skipif(grammars_missing() is not None, reason=str(grammars_missing()))

SAMPLES = {
    "python": "sample.py",
    "javascript": "sample.js",
    "typescript": "sample.ts",
    "go": "sample.go",
    "rust": "sample.rs",
    "java": "Sample.java",
    "c": "sample.c",
    "cpp": "sample.cpp",
    "lua": "sample.lua",
    "ruby": "sample.rb",
    "bash": "sample.sh",
}

# Node types that are definitions, per the grammars (used to check "whole definitions").
DEF_TYPES = re.compile(
    r"^(function_definition|function_declaration|function_item|method_definition|method_declaration|"
    r"class_definition|class_declaration|decorated_definition|class_specifier|struct_specifier|"
    r"struct_item|impl_item|interface_declaration|constructor_declaration|method|class|module|"
    r"type_declaration|lexical_declaration|export_statement|local_function|namespace_definition)$"
)


def _read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def _nodes(text: str, language: str) -> list[tuple[int, int, str]]:
    """(start, end, type) of every node, in character offsets."""
    doc = parse(text, language)
    assert doc is not None
    out: list[tuple[int, int, str]] = []
    stack = [doc.root]
    while stack:
        node = stack.pop()
        out.append((doc.b2c(node.start_byte), doc.b2c(node.end_byte), node.type))
        stack.extend(node.children)
    return out


def _check_invariants(text: str, w, budget: int, suffix_budget: int | None = None) -> None:
    assert w.prefix == w.header + text[w.prefix_start : w.start]
    assert w.suffix == text[w.end : w.suffix_end]
    assert 0 <= w.prefix_start <= w.start <= w.end <= w.suffix_end <= len(text)
    assert len(w.prefix) + len(w.suffix) <= budget
    if suffix_budget is not None:
        assert len(w.suffix) <= suffix_budget
    for s, e in w.header_spans:
        assert e <= w.prefix_start
        assert s == 0 or text[s - 1] == "\n"


def _too_big(w, s: int, e: int, budget: int) -> bool:
    """Whether adding the node [s, e) whole to window ``w`` would have overrun the budget.

    A node is only ever cut when it does not fit: the window then takes its trailing (or
    leading) children instead. While the prefix dips into such a node it keeps up to a third
    of the budget free for the suffix, hence the slack.
    """
    union = max(e, w.suffix_end) - min(s, w.prefix_start) - (w.end - w.start)
    return union + len(w.header) + budget // 3 + 8 > budget


def _check_syntax_boundaries(nodes, w, budget: int) -> None:
    """No node is cut by the window unless it holds the cursor or is too big to fit."""
    for s, e, kind in nodes:
        holds_cursor = s <= w.start and w.end <= e
        for boundary in (w.prefix_start, w.suffix_end):
            if s < boundary < e and not holds_cursor and not _too_big(w, s, e, budget):
                raise AssertionError(f"boundary {boundary} cuts {kind} [{s}, {e}) (cursor {w.start})")


# -- languages -----------------------------------------------------------------------------


@pytest.mark.parametrize("language", [*SAMPLES, "csharp", "php", "kotlin", "swift", "scala", "haskell", "tsx"])
def test_grammars_load_offline(language: str) -> None:
    assert has_grammar(language), f"no grammar for {language}"
    parser = get_parser(language)
    assert parser is not None
    assert get_parser(language) is parser  # cached
    assert parser.parse(b"x").root_node is not None


@pytest.mark.parametrize(
    ("path", "explicit", "expected"),
    [
        ("a/b/c.py", None, "python"),
        ("x.JS", None, "javascript"),
        ("x.mjs", None, "javascript"),
        ("x.ts", None, "typescript"),
        ("x.tsx", None, "tsx"),
        ("main.go", None, "go"),
        ("lib.rs", None, "rust"),
        ("A.java", None, "java"),
        ("a.c", None, "c"),
        ("a.hpp", None, "cpp"),
        ("init.lua", None, "lua"),
        ("Rakefile", None, "ruby"),
        ("a.rb", None, "ruby"),
        ("run.sh", None, "bash"),
        ("P.cs", None, "csharp"),
        ("i.php", None, "php"),
        ("k.kt", None, "kotlin"),
        ("s.swift", None, "swift"),
        ("s.scala", None, "scala"),
        ("h.hs", None, "haskell"),
        ("Makefile", None, "make"),
        ("notes.unknownext", None, None),
        (None, None, None),
        ("x.py", "rust", "rust"),
        (None, "typescriptreact", "tsx"),
        (None, "shellscript", "bash"),
        (None, "C++", "cpp"),
        (None, "no-such-language", None),
    ],
)
def test_detect_language(path: str | None, explicit: str | None, expected: str | None) -> None:
    assert detect_language(path, explicit) == expected


def test_detect_language_from_shebang() -> None:
    assert detect_language("tool", content="#!/usr/bin/env python3\nprint(1)\n") == "python"
    assert detect_language("tool", content="#!/bin/bash\necho hi\n") == "bash"
    assert detect_language("tool", content="just text\n") is None


# -- windows over every sample, at many cursor positions -------------------------------------


@pytest.mark.parametrize("language", list(SAMPLES))
def test_windows_never_cut_nodes_or_exceed_budget(language: str) -> None:
    text = _read(SAMPLES[language])
    nodes = _nodes(text, language)
    step = max(1, len(text) // 60)
    checked = 0
    for budget in (120, 400, 900):
        for offset in range(0, len(text) + 1, step):
            w = cursor_window(text, offset, language, budget)
            _check_invariants(text, w, budget)
            if w.method == "syntax":
                _check_syntax_boundaries(nodes, w, budget)
                checked += 1
    assert checked > 100  # the grammar was really used


@pytest.mark.parametrize("language", list(SAMPLES))
def test_enclosing_definition_is_whole_when_it_fits(language: str) -> None:
    text = _read(SAMPLES[language])
    nodes = _nodes(text, language)
    defs = [(s, e) for s, e, kind in nodes if DEF_TYPES.match(kind) and "\n" in text[s:e]]
    assert defs, "sample has definitions"
    seen = 0
    for s, e in defs:
        inside = [o for o in range(s + 1, e) if text[o - 1] == "\n"][:3]  # cursors at line starts inside
        for offset in inside:
            budget = (e - s) + 40
            w = cursor_window(text, offset, language, budget)
            _check_invariants(text, w, budget)
            assert w.method == "syntax"
            assert w.prefix_start <= s and w.suffix_end >= e, (
                f"{language}: definition [{s},{e}) not whole in window [{w.prefix_start},{w.suffix_end})"
            )
            seen += 1
    assert seen


@pytest.mark.parametrize("language", list(SAMPLES))
def test_window_starts_on_a_line_and_keeps_definitions_whole(language: str) -> None:
    """The prefix starts at a line start, on a top-level item unless the item before the
    window is too big to fit (then on a line inside it); definitions around are whole,
    absent, or too big to fit."""
    text = _read(SAMPLES[language])
    doc = parse(text, language)
    top = [(doc.b2c(n.start_byte), doc.b2c(n.end_byte)) for n in doc.root.named_children]
    nodes = _nodes(text, language)
    defs = [(s, e) for s, e, kind in nodes if DEF_TYPES.match(kind)]
    checked = 0
    for offset in range(0, len(text), max(1, len(text) // 25)):
        offset = text.rfind("\n", 0, offset) + 1  # cursor at a line start
        for budget in (300, 600, 1200):
            w = cursor_window(text, offset, language, budget)
            assert w.method == "syntax"
            if w.prefix_start == w.start:
                continue  # nothing before the cursor fits
            if not (w.prefix_start == 0 or text[w.prefix_start - 1] == "\n"):
                # Only the opening line of an enclosing scope may be cut, when all of it does
                # not fit (`export class C {` with room for `class C {` only).
                assert any(
                    s <= w.prefix_start and w.end <= e and "\n" not in text[s : w.prefix_start]
                    for s, e, _ in nodes
                    if s <= w.start
                ), f"prefix starts mid-line: {text[w.prefix_start : w.prefix_start + 40]!r}"
                continue
            first = w.prefix_start + len(w.body_prefix) - len(w.body_prefix.lstrip())
            on_item = any(s == first for s, _ in top)
            if not on_item:
                s, e = next(((s, e) for s, e in top if s < first < e), (first, first))
                assert s == e or s <= w.start <= e or _too_big(w, s, e, budget), (
                    f"prefix starts inside a top-level item that fits: {text[s:e][:50]!r}"
                )
            for s, e in defs:
                holds = s <= w.start <= e
                whole = w.prefix_start <= s and e <= w.suffix_end
                outside = e <= w.prefix_start or s >= w.suffix_end
                assert holds or whole or outside or _too_big(w, s, e, budget), f"{text[s:e][:40]!r} cut"
            checked += 1
    assert checked > 20


def test_python_window_layout() -> None:
    text = _read("sample.py")
    offset = text.index("        lines.append(f\"{inv.items[sku]")
    w = cursor_window(text, offset, "python", budget_chars=700)
    assert w.method == "syntax"
    body = w.body_prefix
    # The enclosing `report` function is whole, and starts the prefix or follows whole siblings.
    assert "def report(inv: Inventory) -> str:\n" in body
    assert body.startswith(("def ", "class ", "@"))
    # The suffix finishes `report`, then shows the head of the next function, on line ends.
    assert 'return "\\n".join(lines)\n' in w.suffix and w.suffix.endswith("\n")
    assert "def cheapest(inv: Inventory, n: int = 3) -> list[Item]:\n" in w.suffix
    # Imports from the top of the file ride along in the header.
    assert "import json\n" in w.header and "from dataclasses import dataclass, field\n" in w.header
    assert w.prefix.startswith(w.header)
    for s, e in w.header_spans:
        assert text[s:e].lstrip().startswith(("from ", "import "))


def test_suffix_budget_is_a_hard_cap() -> None:
    text = _read("sample.py")
    offset = text.index("    def remove(")
    for cap in (0, 30, 200):
        w = cursor_window(text, offset, "python", 1000, suffix_budget_chars=cap)
        _check_invariants(text, w, 1000, cap)


def test_prefix_gets_the_larger_share() -> None:
    text = _read("sample.go")
    offset = text.index("func (r Rect) Area()")
    w = cursor_window(text, offset, "go", 600)
    assert len(w.prefix) > len(w.suffix)
    assert len(w.suffix) > 0


def test_whole_file_when_it_fits() -> None:
    text = _read("sample.rs")
    offset = text.index("write!(f")
    w = cursor_window(text, offset, "rust", len(text) + 10)
    assert (w.prefix_start, w.suffix_end) == (0, len(text))
    assert w.header == ""


def test_selection_window() -> None:
    text = _read("Sample.java")
    start = text.index("        balance += amount;")
    end = text.index("        ledger.add(amount);") + len("        ledger.add(amount);\n")
    w = selection_window(text, start, end, "java", 400)
    _check_invariants(text, w, 400)
    assert w.prefix.endswith("        }\n") and w.prefix_start < start
    assert w.start == start and w.end == end
    deposit = text.index("    public void deposit")
    assert w.prefix_start <= deposit  # the enclosing method is whole
    assert w.suffix.startswith("    }\n")
    _check_syntax_boundaries(_nodes(text, "java"), w, 400)


def test_selection_spanning_definitions() -> None:
    text = _read("sample.js")
    start = text.index("  route(pattern")
    end = text.index("  handle(request)")
    w = selection_window(text, start, end, "javascript", 500)
    _check_invariants(text, w, 500)
    assert w.method == "syntax"
    _check_syntax_boundaries(_nodes(text, "javascript"), w, 500)


def test_strings_are_never_cut() -> None:
    """Budgets that would end a line window inside the multi-line string never do here."""
    text = _read("sample.py")
    s = text.index('BANNER = """')
    e = text.index('"""\n', s + 12) + 3
    after = text.index("@dataclass")
    for budget in range(20, 260, 7):
        w = cursor_window(text, after, "python", budget, suffix_budget_chars=0)
        assert not s < w.prefix_start < e, f"budget {budget} cuts the string"
        assert w.prefix_start <= s or w.prefix_start >= e


def test_cursor_inside_a_huge_string_uses_lines_inside_it() -> None:
    big = "".join(f"line {i} of a long text\n" for i in range(400))
    text = f'import os\n\nDOC = """\n{big}"""\n\n\ndef f():\n    return DOC\n'
    offset = text.index("line 200 of")
    w = cursor_window(text, offset, "python", 300)
    _check_invariants(text, w, 300)
    assert w.method == "lines"
    assert w.prefix_start > text.index('"""')  # stays inside the string...
    assert text[w.prefix_start - 1] == "\n"  # ...on whole lines
    assert w.prefix.endswith("\n") or w.prefix.endswith("line ")


def test_unknown_language_falls_back_to_lines() -> None:
    text = "".join(f"row {i}: some words here\n" for i in range(100))
    offset = text.index("row 50:") + 4
    w = cursor_window(text, offset, None, 200)
    assert w.method == "lines" and w.language is None
    _check_invariants(text, w, 200)
    assert text[w.prefix_start - 1] == "\n"  # whole lines
    assert w.suffix_end == len(text) or text[w.suffix_end - 1] == "\n"
    assert len(w.prefix) > len(w.suffix) > 0
    # The same text under a name that is no language.
    assert cursor_window(text, offset, "klingon", 200).method == "lines"


def test_unparsable_text_falls_back_to_lines() -> None:
    prose = (
        "It was the best of times, it was the worst of times; it was the age of wisdom, "
        "it was the age of foolishness's own {unbalanced [brackets and 'quotes.\n"
    ) * 40
    doc = parse(prose, "python")
    assert doc is not None and not doc.parsable
    w = cursor_window(prose, len(prose) // 2, "python", 500)
    assert w.method == "lines"
    _check_invariants(prose, w, 500)


def test_small_syntax_error_still_uses_the_tree() -> None:
    text = _read("sample.py")
    cut = text.index("        total = 0.0")
    broken = text[:cut] + "        total = (\n" + text[cut:]  # typing in progress
    doc = parse(broken, "python")
    assert doc is not None and doc.root.has_error and doc.parsable
    assert cursor_window(broken, cut + 16, "python", 600).method == "syntax"


def test_long_single_line_is_cut_between_words() -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    w = cursor_window(text, len(text) // 2, None, 300)
    _check_invariants(text, w, 300)
    assert w.prefix_start == 0 or text[w.prefix_start - 1] == " "
    assert w.suffix_end == len(text) or text[w.suffix_end] == " "


def test_non_ascii_offsets_are_code_points() -> None:
    text = (
        "import os\n\n"
        "GREETING = 'héllo wörld 😀'\n\n\n"
        "def café(x):\n"
        "    # naïve: ünïcödé 🐍 before the cursor\n"
        "    return x + 1\n\n\n"
        "def other():\n"
        "    return '日本語'\n"
    )
    offset = text.index("return x + 1")
    w = cursor_window(text, offset, "python", 80)
    _check_invariants(text, w, 80)
    assert w.body_prefix.startswith("def café(x):\n")
    assert w.suffix.startswith("return x + 1\n")
    _check_syntax_boundaries(_nodes(text, "python"), w, 80)


def test_edge_offsets_and_errors() -> None:
    text = _read("sample.lua")
    for offset in (0, len(text)):
        w = cursor_window(text, offset, "lua", 200)
        _check_invariants(text, w, 200)
    w = cursor_window("", 0, "python", 100)
    assert (w.prefix, w.suffix) == ("", "")
    with pytest.raises(PositionError):
        cursor_window(text, len(text) + 1, "lua")
    with pytest.raises(PositionError):
        selection_window(text, 10, 5, "lua")


# -- parsing cache ---------------------------------------------------------------------------


def test_incremental_reparse_matches_a_fresh_parse() -> None:
    clear_cache()
    text = _read("sample.ts")
    parse(text, "typescript", document="sample.ts")
    edits = [
        (text.index("return stats.size"), "/* é */ "),
        (text.index("private users"), "readonly "),
        (len(text), "\nexport const x = 1;\n"),
        (0, "// 日本語\n"),
    ]
    current = text
    for at, insert in edits:
        at = min(at, len(current))
        current = current[:at] + insert + current[at:]
        doc = parse(current, "typescript", document="sample.ts")
        fresh = get_parser("typescript").parse(current.encode())
        assert str(doc.root) == str(fresh.root_node)
    assert cache_stats()["incremental_parses"] >= len(edits)
    assert parse(current, "typescript") is doc  # cached by text


# -- positions -------------------------------------------------------------------------------


def test_positions_one_and_zero_based() -> None:
    text = "ab\ncdé\n\nlast"
    assert position_to_offset(text, 1, 1) == 0
    assert position_to_offset(text, 2, 3) == 5
    assert position_to_offset(text, 2, 4) == 6  # just past the line's text
    assert position_to_offset(text, 1, 0, base=0) == 3
    assert position_to_offset(text, 4, 5) == len(text)
    for offset in range(len(text) + 1):
        line, col = offset_to_position(text, offset)
        assert position_to_offset(text, line, col) == offset
        line0, col0 = offset_to_position(text, offset, base=0)
        assert (line0, col0) == (line - 1, col - 1)
    for bad in ((0, 1), (5, 1), (2, 6), (1, 0)):
        with pytest.raises(PositionError):
            position_to_offset(text, *bad)
    assert position_to_offset(text, 9, 99, clamp=True) == len(text)


def test_utf16_positions() -> None:
    text = "x = 1\ns = '😀é'  # 🐍 snake\nend\n"
    line1 = text.index("s = ")
    emoji = text.index("😀")
    # '😀' is two UTF-16 code units: the character after it is at UTF-16 column 7, offset +6.
    assert offset_to_utf16_position(text, emoji) == (1, 5)
    assert offset_to_utf16_position(text, emoji + 1) == (1, 7)
    assert utf16_col_to_offset(text, 1, 7) == emoji + 1
    assert utf16_col_to_offset(text, 1, 6) == emoji  # inside the surrogate pair: its start
    assert utf16_col_to_offset(text, 1, 999) == text.index("\nend")  # clamped to the line end
    assert utf16_col_to_offset(text, 99, 0) == len(text)
    for offset in range(line1, len(text) + 1):
        line, col = offset_to_utf16_position(text, offset)
        assert utf16_col_to_offset(text, line, col) == offset


# -- large buffers: region parsing ----------------------------------------------------------


def _big_python(n: int, name: str = "Record") -> str:
    note = "naive" if name.isascii() else "naïve 😀"  # an ASCII buffer and one that is not
    parts = ["import os", "import sys", "from dataclasses import dataclass", ""]
    for i in range(n):
        parts += [
            "", "", "@dataclass", f"class {name}{i}:", f'    """Record {i}, {note}."""', "    size: int = 0", "",
            "    def grow(self, n: int) -> int:", "        total = self.size", "        for k in range(n):",
            "            total += k * 2", "        return total", "", "",
            f"def helper_{i}(values: list[int]) -> dict[str, int]:", "    result = {}", "    for v in values:",
            f"        result[str(v)] = os.getpid() + v + {i}", "    return result",
        ]
    return "\n".join(parts) + "\n"


def _big_js(n: int) -> str:
    parts = ['import fs from "node:fs";', ""]
    for i in range(n):
        parts += [
            "", f"export class Widget{i} {{", "  grow(n) {", "    let total = this.size;",
            "    for (let k = 0; k < n; k++) {", "      total += k * 2;", "    }", "    return total;", "  }", "}",
            "", f"export function helper{i}(values) {{", "  const result = {};", "  return fs.join(result);", "}",
        ]
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize(
    ("language", "source"),
    [("python", _big_python(260)), ("python", _big_python(260, "Récord")), ("javascript", _big_js(420))],
)
def test_region_parse_gives_the_same_windows(language: str, source: str) -> None:
    """Windows over a large buffer parsed only around the cursor equal whole-file windows,
    also while the buffer is being edited (the skeleton follows the edits)."""
    assert len(source) > 64 * 1024
    clear_caches()
    text = source
    spots = [m.start() + 3 for m in re.finditer(r"total", text)]
    for step, at in enumerate(spots[:: max(1, len(spots) // 25)]):
        at += step  # earlier insertions moved the text along
        text = text[:at] + "x" + text[at:]  # typing inside an identifier keeps the code valid
        for budget in (400, 3000, 8000):
            w = cursor_window(text, at + 1, language, budget, document="big")
            full = cursor_window(text, at + 1, language, budget, region=False)
            assert w == full, (step, budget)
        sel = selection_window(text, at - 10, at + 10, language, 2000, document="big")
        assert sel == selection_window(text, at - 10, at + 10, language, 2000, region=False)
    assert parse(text, language).root.has_error is False


def test_mangled_buffers_keep_the_invariants() -> None:
    """Real files with CRLF endings, stray brackets and quotes, non-BMP and lone-surrogate
    characters, cut at random, in right and wrong languages, at extreme budgets: every window
    still keeps the offsets invariants and its budgets."""
    rng = random.Random(11)
    names = list(SAMPLES.values())
    languages = [*SAMPLES, "tsx", "csharp", "php", "kotlin", "haskell", "yaml", "markdown", None]
    pieces = ["é", "😀", "\r\n", "\t", '"""', "{", "}", "(", "'", "\\", "\ud800", "\n\n", "    "]
    for _ in range(500):
        text = _read(rng.choice(names))
        if rng.random() < 0.3:
            text = text.replace("\n", "\r\n")
        for _ in range(rng.randrange(6)):
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(pieces) + text[at:]
        if rng.random() < 0.2:
            at = rng.randrange(len(text) + 1)
            text = text[at : at + rng.randrange(200)]
        language = rng.choice(languages)
        budget = rng.choice([0, 1, 5, 50, 300, 2000, 100_000])
        cap = rng.choice([None, None, 0, 10, 500])
        start = rng.randrange(len(text) + 1)
        end = min(len(text), start + rng.randrange(50))
        for w in (
            cursor_window(text, start, language, budget, cap),
            selection_window(text, start, end, language, budget, cap),
        ):
            _check_invariants(text, w, budget, cap)


def test_imports_inside_the_window_leave_no_reservation_unused() -> None:
    text = _read("sample.py")
    offset = text.index("@dataclass")
    w = cursor_window(text, offset, "python", 600)
    assert w.prefix_start == 0 and w.header == ""  # the imports are in the window itself
    assert len(w.prefix) + len(w.suffix) > 600 - 60  # and the room kept for them went to the suffix


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_requests_send_a_buffer_that_fits_whole_as_its_window_would(language: str) -> None:
    """The request builder sends a buffer whose text outside the cursor or selection fits the
    budget without cutting a window (no parse): the same prefix, suffix and language as the
    syntactic window; a larger buffer still gets the syntactic window."""
    from diffgemma.runtime.api.request_builder import Buffer, Sampling, edit_request, infill_request

    text = _read(SAMPLES[language])
    rng = random.Random(language)
    for size in (40, 400, len(text)):
        part = text[:size]
        buffer = Buffer(text=part, language=language)
        for _ in range(8):
            a = rng.randint(0, len(part))
            b = rng.randint(a, len(part))
            for budget in (len(part), len(part) - (b - a), len(part) // 2):
                infill = infill_request(buffer, a, budget, Sampling())
                window = cursor_window(part, a, language, budget)
                assert (infill.prefix, infill.suffix, infill.language) == (window.prefix, window.suffix, language)
                edit = edit_request(buffer, a, b, budget, Sampling())
                chosen = selection_window(part, a, b, language, budget)
                assert (edit.prefix, edit.suffix, edit.language) == (chosen.prefix, chosen.suffix, language)
    with pytest.raises(PositionError):
        infill_request(Buffer(text="x = 1\n", language=language), 7, 100, Sampling())
