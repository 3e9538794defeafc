"""The tokens of an answer written canvas after canvas, and the text they make: what the local
engine's fill (`fill.Fill`) and the vLLM engine's (`vllm.fill.Answer`) share. Torch-free, so the
vLLM engine can use it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from diffgemma.runtime.engine.layout import trim_join
from diffgemma.runtime.engine.prompt import strip_heal
from diffgemma.runtime.engine.types import Draft, DraftCallback

Decode = Callable[[Sequence[int]], str]


class AnswerTokens:
    """The tokens of an answer committed so far and their confidences; committed canvases are
    sent as drafts (``on_draft``), each drawing the answer up to its last line break."""

    def __init__(self, decode: Decode, healed: str, prefix: str, on_draft: DraftCallback | None,
                 confidence: bool = False) -> None:
        self.decode = decode
        self.healed = healed
        self.prefix = prefix
        self.on_draft = on_draft
        self.confidence = confidence
        self.tokens: list[int] = []
        self.conf: list[float] = []  # each token's confidence
        self.committed = 0  # tokens of the committed canvases
        self.canvas = 0

    def _decode(self, tokens: list[int], stops: Collection[int] | None = None) -> str:
        kept = [t for t in tokens if stops is None or t not in stops]
        return strip_heal(self.decode(kept), self.healed)

    def add(self, tokens: list[int], confidence: list[float]) -> None:
        self.tokens += tokens
        self.conf += confidence[: len(tokens)]

    def commit(self, tokens: list[int], confidence: list[float]) -> None:
        """A canvas is final: later canvases only extend it, so a stream can send it now. The
        text is sent up to its last line break (the join clean-up only ever drops whole lines)."""
        self.add(tokens, confidence)
        self.committed = len(self.tokens)
        if self.on_draft is not None:
            text = trim_join(self._decode(self.tokens), self.prefix, "")
            cut = text.rfind("\n") + 1
            self.on_draft(Draft(step=0, text=text[:cut], canvas=self.canvas, final=True))
        self.canvas += 1

    def text(self, suffix: str, stops: Collection[int], tail: list[int] | None = None) -> str:
        """The answer's text; with ``tail``, an alternative for the last canvas's hole (the
        committed canvases are shared by all alternatives)."""
        tokens = self.tokens if tail is None else self.tokens[: self.committed] + tail
        return trim_join(self._decode(tokens, stops), self.prefix, suffix)
