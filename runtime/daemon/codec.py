"""The answer side of a compatibility endpoint: a Codec per client protocol (torch-free).

Streaming: these clients concatenate the text of every event, which suits a left-to-right
decoder. A committed diffusion canvas only ever extends the answer (``Draft.final``), so each
committed canvas is sent as soon as it exists, then the closing event. The text a stop string
could still start is held back until it is known not to.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from diffgemma.runtime.api.errors import WireError
from diffgemma.runtime.api.results import Result
from diffgemma.runtime.engine.types import Draft


def apply_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string, as AR servers do; returns (text, the word hit)."""
    cut, word = len(text), None
    for stop in stops:
        at = text.find(stop)
        if 0 <= at < cut:
            cut, word = at, stop
    return text[:cut], word


@dataclass
class Codec:
    """One client protocol: how a result is answered, and how a stream sends committed text."""

    stops: list[str] = field(default_factory=list)
    count: int = 1  # candidates asked for (n / n_cmpl)
    created: int = field(default_factory=lambda: int(time.time()))
    sent: str = ""
    word: str | None = None  # the stop string hit while streaming
    model: str = ""  # the model answering, for stream events sent before the result exists

    def take(self, text: str, done: bool) -> str:
        """The part of the committed ``text`` not sent yet (minus what a stop string could start)."""
        if self.word is not None:
            return ""
        visible, word = apply_stop(text, self.stops)
        if word is not None:
            self.word = word
        elif not done and self.stops:
            hold = max(len(s) for s in self.stops) - 1
            visible = text[: max(len(self.sent), len(text) - hold)]
        if not visible.startswith(self.sent):
            return ""  # a committed canvas never shrinks; if it did, what was sent stands
        new = visible[len(self.sent):]
        self.sent = visible
        return new

    def texts(self, result: Result) -> list[tuple[str, str | None]]:
        """(text, stop word) for each candidate, stop strings applied."""
        texts = result.alternatives[: self.count] if result.alternatives else [result.text]
        return [apply_stop(t, self.stops) for t in texts]

    # Overridden per protocol:
    def answer(self, result: Result) -> Any:
        raise NotImplementedError

    def draft(self, draft: Draft, request_id: str) -> bytes:
        """The event for a committed canvas (nothing for a step's draft: those clients append)."""
        if not draft.final:
            return b""
        new = self.take(draft.text, done=False)
        return self.event(new, request_id) if new else b""

    def event(self, text: str, request_id: str) -> bytes:
        raise NotImplementedError

    def end(self, result: Result) -> bytes:
        raise NotImplementedError

    def error(self, error: WireError) -> bytes:
        return sse(error.body())


# Characters JSON leaves raw in a string that line readers other than a JSON parser take for line
# breaks (Python's str.splitlines, hence httpx's iter_lines, and JavaScript's line separators).
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line(data: Any) -> str:
    """``data`` as one line of JSON, however a reader splits lines: the only characters of a stream
    event or an NDJSON line that could break it are escaped (the same JSON, to a JSON parser)."""
    text = json.dumps(data, ensure_ascii=False)
    for raw, escaped in _LINE_BREAKS.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def sse(data: Any) -> bytes:
    return f"data: {json_line(data)}\n\n".encode()
