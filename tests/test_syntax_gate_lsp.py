"""The language server's ghost text never adds syntax errors to the document: the daemon's answer
is gated, and so is the server's own cut of it at the first unsure token (``confidentPrefix``).
A real `diffgemma lsp` driven by pytest-lsp against a daemon serving the tiny random-weight model,
whose fills are almost never code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import grammars_missing
from test_lsp_server import Daemon, base_options, lsp_session, run_daemon

from diffgemma.context.syntax_gate import added_errors

pytestmark = pytest.mark.skipif(grammars_missing() is not None, reason=str(grammars_missing()))

DOC = "import os\n\n\ndef area(radius):\n    total = radius * radius\n    \n    return total\n"
LINE, COL = 5, 4  # the blank line of the body


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    with run_daemon(tiny_model_dir, "--max-request-seconds", "0") as d:
        yield d


@pytest.mark.parametrize("options", [{}, {"confidentPrefix": 0.9, "alternatives": 2}])
async def test_ghost_text_adds_no_syntax_error(tmp_path: Path, daemon: Daemon, options: dict[str, object]) -> None:
    lines = DOC.split("\n")
    offset = sum(len(line) + 1 for line in lines[:LINE]) + COL
    before, after = DOC[:offset], DOC[offset:]
    async with lsp_session(tmp_path, base_options(daemon, **options), env=daemon.env) as s:
        uri = s.open(tmp_path / "shapes.py", DOC)
        answered = 0
        for attempt in range(4):  # unseeded: each answer is another sample
            result = await s.inline(uri, LINE, COL)
            answered += result is not None
            for item in (result.items if result is not None else []):
                assert isinstance(item.insert_text, str)
                assert not added_errors([before, after], [item.insert_text], "python"), (attempt, item.insert_text)
        assert answered
