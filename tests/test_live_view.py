"""The live view on a terminal: what it says while the daemon repairs, the frame it ends on, a clean
terminal after Ctrl-C, alternatives told apart, and the repair phase in the daemon's stream (a real
daemon on the tiny random-weight checkpoint, whose fills rarely parse, so repair runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from test_cli_commands import Daemon, daemon, run_on_pty  # noqa: F401 - the module's daemon fixture

from diffgemma.cli.live import LiveCanvas, print_alternatives, visible
from diffgemma.runtime.api.results import Result

CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b[()][A-Za-z0-9]|\x1b[=>]")


def screen_after(output: str, columns: int = 160, rows: int = 40) -> list[str]:
    """What a terminal of ``columns`` x ``rows`` holds once ``output`` is written to it: the cursor
    moves, line erases and carriage returns Rich sends, applied (colors and cursor visibility
    dropped). Lines that scroll off the top stay in the list, out of the cursor's reach, as in a
    terminal's scroll-back."""
    lines: list[list[str]] = [[]]
    row = col = 0
    pos = 0
    for match in [*CSI.finditer(output), None]:
        end = match.start() if match is not None else len(output)
        for ch in output[pos:end]:
            if ch == "\r":
                col = 0
            elif ch == "\n":
                row += 1
                col = 0
                while len(lines) <= row:
                    lines.append([])
            elif ch >= " ":
                if col >= columns:
                    row, col = row + 1, 0
                    while len(lines) <= row:
                        lines.append([])
                line = lines[row]
                line.extend(" " * (col + 1 - len(line)))
                line[col] = ch
                col += 1
        if match is None:
            break
        pos = match.end()
        params, final = match.group(1) or "", match.group(2)
        n = int(params) if params.isdigit() else 1
        if final == "A":  # the cursor cannot leave the screen for the scroll-back
            row = max(len(lines) - rows, 0, row - n)
        elif final == "B":
            row += n
            while len(lines) <= row:
                lines.append([])
        elif final == "K":
            line = lines[row]
            if params in ("", "0"):
                del line[col:]
            elif params == "2":
                line.clear()
            else:
                line[:col] = [" "] * min(col, len(line))
        elif final == "G":
            col = max(0, n - 1)
    return ["".join(line).rstrip() for line in lines]


def test_the_view_says_repairing_and_ends_on_the_returned_text() -> None:
    from rich.console import Console

    view = LiveCanvas("def f(x):\n    return ", "\n", "f.py:2")
    view.update({"step": 6, "text": "x +"})
    view.update({"step": 6, "text": "x +", "phase": "repairing", "round": 2})
    console = Console(record=True, width=80, color_system=None)
    console.print(view._render())
    shown = console.export_text()
    assert "step 6 · repairing (round 2)" in shown and "x +" in shown
    view.update({"step": 7, "text": "x + 1"})  # a new step's draft ends the phase
    assert view._status() == "step 7"
    view.finish(Result(text="x * 2", finish_reason="stop", timings={}, id="r", model="m"))
    console = Console(record=True, width=80, color_system=None)
    console.print(view._render())
    shown = console.export_text()
    assert "x * 2" in shown and "x + 1" not in shown and "· done" in shown


def test_alternatives_are_numbered_with_their_whitespace_shown(capsys: object) -> None:
    assert visible("") == ["∅ (empty)"]
    assert visible("   ") == ["···"]
    assert visible("\tpass  \n") == ["→pass··⏎"]
    assert visible("a b\nc") == ["a b", "c"]
    print_alternatives([["x = 1"], [""], ["    pass\n"]])
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "alternative 1 of 3 (the answer):\n  │ x = 1" in err
    assert "alternative 2 of 3:\n  │ ∅ (empty)" in err
    assert "alternative 3 of 3:\n  │ ····pass⏎" in err


def test_ctrl_c_leaves_a_clean_terminal(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    """The view of two far-apart holes is taller than a 10-line terminal; Ctrl-C as soon as it is
    drawn leaves nothing of it, on screen or in the scroll-back (Rich's last, uncropped redraw
    scrolled its top border out of the erase's reach)."""
    from diffgemma.runtime.api.protocol import MAX_STEPS

    between = "\n".join(f"    v{i} = {i} * {i}" for i in range(24))
    far = ["def f():\n    a = ", between + "\n    w = ", "\n    return w\n"]
    path = tmp_path / "far.py"
    path.write_text("<FILL>".join(far))
    env = {**daemon.env, "DIFFGEMMA_STEPS": str(MAX_STEPS), "DIFFGEMMA_MAX_TOKENS": "64"}
    code, output = run_on_pty(["infill", str(path), "--socket", str(daemon.socket)], env,
                              interrupt_on="far.py: 2 holes", lines=10)
    assert code == 130, output
    screen = screen_after(output, rows=10)
    assert [line for line in screen if line.strip()] == ["diffgemma: interrupted"], "\n".join(screen)
    assert path.read_text() == "<FILL>".join(far)


def test_the_stream_says_when_it_repairs(daemon: Daemon) -> None:  # noqa: F811
    body = {"prefix": "def f(x):\n    return ", "suffix": "\n\n\nprint(f(1))\n", "language": "python",
            "steps": 3, "max_tokens": 12, "seed": 3, "stream": True}
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://d", timeout=300) as http:
        answer = http.post("/v1/infill", json=body)
    lines = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
    result = lines[-1]
    assert result["type"] == "result"
    rounds = result["timings"]["refine_rounds"]
    phases = [line for line in lines if line.get("phase")]
    # one "repairing" draft per round that ran, in order, each with the answer as it stood
    assert [p["round"] for p in phases] == list(range(1, rounds + 1))
    assert all(p["phase"] == "repairing" and p["type"] == "draft" and isinstance(p["text"], str) for p in phases)
    assert rounds >= 1  # the tiny random model's fill breaks the syntax: repair runs
    first_step = next(i for i, line in enumerate(lines) if line["type"] == "draft" and not line.get("phase"))
    assert first_step < lines.index(phases[0])
