"""What the terminal shows while and after a request runs: a Rich live view of the refining canvas,
and colored diffs.

The live view shows the drafts the daemon streams (one per denoising step) between the
last lines before the cursor and the first lines after it; with several holes, the buffer with
every hole's draft (`HolesCanvas`). It draws on stderr, and only when stderr is a terminal and
there is no --quiet (cli/plumbing.py's `Output` decides, once), so stdout stays clean for pipes;
it is transient: once the result is in, its last frame shows the text the daemon returned, then the
view is erased and the result is printed. Each frame is drawn whole (Ctrl-C waits for the frame being
written), and the view is erased before Rich stops, so an interrupted run leaves a clean terminal.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from diffgemma.runtime.api.results import draft_holes

# Lines of context shown around the hole in the live view.
_BEFORE_LINES = 4
_AFTER_LINES = 3
# Draft tokens the model gave less than this probability are drawn dimmed.
LOW_CONFIDENCE = 0.5


def printable(text: str) -> str:
    """Make model output safe to draw: control characters (other than newline/tab) become ␀-style."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in "\n\t" or (code >= 32 and code != 127 and not 0x80 <= code < 0xA0):
            out.append(ch)
        elif code < 32:
            out.append(chr(0x2400 + code))  # the Unicode "control picture" for it
        else:
            out.append("\ufffd")
    return "".join(out)


@contextlib.contextmanager
def whole_frame() -> Iterator[None]:
    """Hold Ctrl-C back while a frame is written: a frame cut in half leaves lines that erasing
    the view (which counts the lines of the last whole frame) cannot reach. The interrupt is
    raised as soon as the frame is out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


class LiveCanvas:
    """A transient Rich Live view; `update` is the `on_draft` callback for the client."""

    def __init__(self, before: str, after: str, title: str) -> None:
        self.before = "\n".join(before.split("\n")[-_BEFORE_LINES:])
        self.after = "\n".join(after.split("\n")[:_AFTER_LINES])
        self.title = title
        self.step = 0
        self.draft = ""
        self.tokens: list[dict[str, Any]] = []  # the draft token by token, when the daemon sends them
        self.frames = 0
        self.phase = ""  # what the daemon does after the steps (repair round k), or "done"
        self._started = time.monotonic()
        self._live: Any = None

    def __enter__(self) -> LiveCanvas:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True, highlight=False)
        self._live = Live(self._render(), console=console, auto_refresh=False, transient=True)
        try:
            with whole_frame():
                self._live.__enter__()
        except KeyboardInterrupt:  # Ctrl-C while the first frame was drawn: `with` will not exit us
            self.__exit__(KeyboardInterrupt, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is None:
            return
        from rich.text import Text

        live, self._live = self._live, None
        with whole_frame():
            # Rich redraws the view once more as it stops, uncropped: a view taller than the
            # terminal would scroll its top border out of reach of the erase. Draw it empty first.
            live.update(Text(""), refresh=True)
            live.__exit__(kind, value, tb)

    def update(self, draft: dict[str, Any]) -> None:
        self.step = int(draft.get("step", self.step + 1))
        self.draft = str(draft.get("text", ""))
        tokens = draft.get("tokens")
        self.tokens = tokens if isinstance(tokens, list) else []
        self.phase = f"repairing (round {draft.get('round', 1)})" if draft.get("phase") == "repairing" else ""
        self._draw()

    def finish(self, result: Any) -> None:
        """The last frame: the text the daemon returned (it may differ from the last draft: repair
        and the join clean-up come after the steps)."""
        self.draft = result.text
        self.tokens = list(result.tokens or [])
        self.step = max(self.step, 1)
        self.phase = "done"
        self._draw()

    def _draw(self) -> None:
        self.frames += 1
        if self._live is not None:
            with whole_frame():
                self._live.update(self._render(), refresh=True)

    def _body(self) -> Any:
        from rich.text import Text

        body = Text()
        body.append(printable(self.before), style="dim")
        if self.step:
            append_fill(body, self.draft, self.tokens, "yellow")
        else:
            body.append("…", style="bold yellow")
        body.append(printable(self.after), style="dim")
        return body

    def _status(self) -> str:
        if not self.step:
            return "waiting for the model"
        return f"step {self.step} · {self.phase}" if self.phase else f"step {self.step}"

    def _render(self) -> Any:
        from rich.panel import Panel

        elapsed = (time.monotonic() - self._started) * 1000
        return Panel(
            self._body(),
            title=f"[bold]diffgemma[/bold] · {self.title}",
            subtitle=f"{self._status()} · {elapsed:.0f} ms",
            border_style="yellow",
        )


def append_fill(body: Any, text: str, tokens: list[dict[str, Any]], color: str) -> None:
    """A fill's draft on ``color``: token by token, dimmed where the model was unsure, when the
    tokens join to the text; else the text in one piece (∅ when it is empty)."""
    if tokens and "".join(str(t.get("text", "")) for t in tokens) == text:
        for token in tokens:  # how sure the model is shows as brightness
            low = float(token.get("confidence", 1.0)) < LOW_CONFIDENCE
            body.append(printable(str(token.get("text", ""))),
                        style=f"dim black on {color}" if low else f"bold black on {color}")
    else:
        body.append(printable(text) or "∅", style=f"bold black on {color}")


def _elide(text: str, keep: int = 3) -> str:
    """Long text between two holes, shortened to its first and last ``keep`` lines."""
    lines = text.split("\n")
    return text if len(lines) <= 2 * keep + 1 else "\n".join([*lines[:keep], "⋮", *lines[-keep:]])


class HolesCanvas(LiveCanvas):
    """The live view of several holes: the buffer with every hole's draft, those already filled
    on green, the ones being denoised on yellow, the ones not reached yet as an ellipsis."""

    def __init__(self, pieces: list[str], title: str) -> None:
        super().__init__(pieces[0], pieces[-1], title)
        self.between = [_elide(p) for p in pieces[1:-1]]
        self.holes: list[dict[str, Any]] = [{"text": "", "state": "waiting"} for _ in range(len(pieces) - 1)]

    def update(self, draft: dict[str, Any]) -> None:
        holes = draft_holes(draft, len(self.holes))
        if holes is not None:
            self.holes = holes
        super().update(draft)

    def finish(self, result: Any) -> None:
        if len(result.holes) == len(self.holes):
            self.holes = [{"text": str(h.get("text", "")), "state": "final", "tokens": h.get("tokens")}
                          for h in result.holes]
        super().finish(result)

    def _body(self) -> Any:
        from rich.text import Text

        body = Text()
        body.append(printable(self.before), style="dim")
        for i, hole in enumerate(self.holes):
            tokens = hole.get("tokens")
            tokens = tokens if isinstance(tokens, list) else []
            if self.step and hole["state"] in ("final", "refining"):
                append_fill(body, hole["text"], tokens, "green" if hole["state"] == "final" else "yellow")
            else:
                body.append("…", style="bold yellow" if not self.step else "dim yellow")
            body.append(printable(self.between[i] if i < len(self.between) else self.after), style="dim")
        return body

    def _status(self) -> str:
        if not self.step:
            return super()._status()
        current = next((i for i, h in enumerate(self.holes) if h["state"] == "refining"), None)
        where = f" · hole {current + 1} of {len(self.holes)}" if current is not None else ""
        return f"step {self.step}{where}" + (f" · {self.phase}" if self.phase else "")


def visible(text: str) -> list[str]:
    """``text`` as lines in which its whitespace can be told apart: leading and trailing blanks
    as · (space) and → (tab), a final line break as ⏎, nothing at all as ∅."""
    if not text:
        return ["∅ (empty)"]
    marks = str.maketrans({" ": "·", "\t": "→"})
    lines = printable(text).split("\n")
    ends_with_break = len(lines) > 1 and lines[-1] == ""
    if ends_with_break:
        lines.pop()
    out = []
    for line in lines:
        body = line.strip(" \t")
        if not body:
            out.append(line.translate(marks))
            continue
        head, tail = line[: len(line) - len(line.lstrip(" \t"))], line[len(line.rstrip(" \t")):]
        out.append(head.translate(marks) + body + tail.translate(marks))
    if ends_with_break:
        out[-1] += "⏎"
    return out


def print_alternatives(sets: list[list[str]]) -> None:
    """Every alternative in turn on stderr, numbered (1 is the answer, the one printed or written),
    whitespace made visible so that two that differ only in it can be told apart. ``sets[k]`` holds
    set k's fill of every hole (one entry per hole)."""
    count = len(sets)
    for k, fills in enumerate(sets, start=1):
        answer = " (the answer)" if k == 1 else ""
        for i, text in enumerate(fills, start=1):
            hole = f", hole {i} of {len(fills)}" if len(fills) > 1 else ""
            lines = [f"diffgemma: alternative {k} of {count}{answer}{hole}:"]
            lines += [f"  │ {line}" for line in visible(text)]
            print("\n".join(lines), file=sys.stderr, flush=True)


def print_diff(diff: str, *, color: bool) -> None:
    """Print a unified diff to stdout, colored (Rich) when asked."""
    if not color:
        sys.stdout.write(diff)
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        else:
            style = ""
        console.print(Text(printable(line), style=style))
