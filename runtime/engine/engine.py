"""The engine: infill, inline rewrite and chat on DiffusionGemma's canvas.

We own the denoising loop (`denoise`, built from the pure step functions in `steps`)
instead of calling ``model.generate``, because infill and rewrite need things ``generate`` does
not offer: the suffix head held fixed inside the canvas, several hole lengths denoised as one
batch, scored against that suffix and pruned early, a canvas that starts from the user's code,
drafts after every step, a time budget, cancellation between steps, a streaming head that
never holds a full-vocabulary tensor, and a prefix cache that survives requests. With the
stock sampler and no clamps, `Engine.generate` reproduces ``model.generate``.

Infill and rewrite lay out their canvases alike (`canvas`); their canvas-by-canvas loops are
`fill` and `rewrite`, several holes at once `holes`, syntax repair `repair`. Those helpers reach
the model only through the `runner.CanvasRunner` the engine builds (`runner.ModelRunner`).
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.canvas import DraftCallback, finish_timings, hole_candidates
from diffgemma.runtime.engine.denoise import Budget, Problem
from diffgemma.runtime.engine.fill import fill_canvases, infill
from diffgemma.runtime.engine.holes import infill_holes
from diffgemma.runtime.engine.interface import Capabilities, EngineKind
from diffgemma.runtime.engine.loading import LoadedModel, load_model
from diffgemma.runtime.engine.prefix_cache import encode
from diffgemma.runtime.engine.prompt import chat_parts
from diffgemma.runtime.engine.rewrite import edit
from diffgemma.runtime.engine.runner import EncodedPrompt, ModelRunner, Observer
from diffgemma.runtime.engine.types import (
    Cancelled,
    CancelToken,
    EngineResult,
    SamplingSettings,
    Timings,
)


def _frees_on_cancel(method: Callable[..., EngineResult]) -> Callable[..., EngineResult]:
    """A cancelled request must not keep its canvases alive through the traceback's frames
    (a caller may hold on to the exception): clear those frames' locals before re-raising."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> EngineResult:
        try:
            return method(*args, **kwargs)
        except Cancelled as exc:
            traceback.clear_frames(exc.__traceback__)
            raise

    return wrapper


class Engine:
    """Infill/rewrite over one loaded DiffusionGemma (`interface.InferenceEngine`). Not thread-safe:
    callers serialize. The calls' ``client`` (who asks) is for engines that route; here it is unused.

    ``observer`` (tests, debugging) is called with the chosen row of every canvas a request
    settles on (`runner.CanvasView`); None, the default, costs nothing."""

    kind: EngineKind = "local"

    def __init__(self, loaded: LoadedModel, sampler: str = "stream", prefix_cache: bool = True,
                 observer: Observer | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.sampler = sampler
        self.runner = ModelRunner(self.model, self.tokenizer, sampler, prefix_cache, observer)
        self.canvas_length = self.runner.canvas_length
        self.vocab_size = self.runner.vocab_size
        self.eos_ids = self.runner.eos_ids
        self.pad_id = self.runner.pad_id
        self.bos_id: Any = self.runner.bos_id
        self.special_ids = self.runner.special_ids
        self.prefix_cache = self.runner.prefix_cache
        self.defaults = self.runner.defaults

    @property
    def observer(self) -> Observer | None:
        return self.runner.observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self.runner.observer = observer

    # ------------------------------------------------------------------ loading / info
    @classmethod
    def load(cls, name: str, device: str | None = None, dtype: str | None = None, quantize: str | None = None,
             **kwargs: Any) -> Engine:
        return cls(load_model(name, device=device, dtype=dtype, quantize=quantize), **kwargs)

    def info(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.model.parameters())
        memory = sum(p.numel() * p.element_size() for p in self.model.parameters())
        memory += sum(b.numel() * b.element_size() for b in self.model.buffers())
        if self.loaded.device.startswith("cuda"):
            memory = int(torch.cuda.memory_allocated())
        return {
            "model": self.loaded.name,
            "path": str(self.loaded.path),
            "device": self.loaded.device,
            "dtype": self.loaded.dtype,
            "canvas_length": self.canvas_length,
            "context_length": int(getattr(self.model.config.get_text_config(), "max_position_embeddings", 0) or 0),
            "vocab_size": self.vocab_size,
            "parameters": int(params),
            "memory_bytes": int(memory),
            "sampler": self.sampler,
        }

    @property
    def default_steps(self) -> int:
        return self.defaults.steps

    def capabilities(self) -> Capabilities:
        return Capabilities()  # everything the API offers

    def health(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.runner.close()
        self.model = None
        self.loaded.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ settings and tokens
    def resolve(self, settings: SamplingSettings | None) -> S.LoopConfig:
        """Checkpoint defaults overridden by the request's settings (validated)."""
        return self.runner.resolve(settings)

    def encode_text(self, text: str) -> list[int]:
        """User text: never parse it for special-token names."""
        return self.runner.encode_text(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.runner.decode(ids)

    def chat_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt of a chat: turn markers as special tokens, the messages as plain text."""
        ids: list[int] = []
        for text, markup in chat_parts(messages):
            ids += self.runner.encode_header(text) if markup else self.encode_text(text)
        return self.runner.fit([self.bos_id] if self.bos_id is not None else [], ids)  # the latest turns fit

    def hole_candidates(self, max_hole: int, suffix_len: int) -> tuple[list[int], int]:
        """Hole lengths to try in one batch, and how many suffix tokens every row holds
        (`canvas.hole_candidates`)."""
        return hole_candidates(self.canvas_length, max_hole, suffix_len)

    # ------------------------------------------------------------------ generate (parity)
    @torch.no_grad()
    def generate(
        self,
        input_ids: list[int],
        max_new_tokens: int = 256,
        settings: SamplingSettings | None = None,
        cancel: CancelToken | None = None,
    ) -> tuple[list[int], Timings]:
        """Plain block-autoregressive generation, the same algorithm as ``model.generate``.

        With the stock sampler and the same seed (``settings.seed``) this reproduces
        ``model.generate(input_ids, max_new_tokens=...)`` token for token, including ``<pad>``
        after the first ``<eos>``.
        """
        run = self.runner.start(settings, Budget(cancel=cancel))
        t0 = time.perf_counter()
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        ids = list(input_ids)
        pending = list(input_ids)
        length = self.canvas_length
        timings = run.timings
        for _ in range(-(-max_new_tokens // length)):
            t_enc = time.perf_counter()
            encode(self.model, cache, pending, start_pos=len(ids) - len(pending))
            timings.encode_ms += (time.perf_counter() - t_enc) * 1000
            timings.encoded_tokens += len(pending)
            out = self.runner.denoise(EncodedPrompt(ids=list(ids), cache=cache),
                                      Problem(canvas=self.runner.noise(1, run.gen)), run)
            block = out.argmax[0].tolist()
            ids += block
            pending = block
            eos = [i for i, t in enumerate(block) if t in self.eos_ids]
            if eos:
                cut = len(ids) - length + eos[0] + 1
                ids[cut:] = [self.pad_id] * (len(ids) - cut)
                break
        new = [t for t in ids[len(input_ids):] if t != self.pad_id]
        finish_timings(timings, len(new), t0)
        return ids, timings

    # ------------------------------------------------------------------ infill
    @_frees_on_cancel
    @torch.no_grad()
    def infill(
        self,
        prefix: str,
        suffix: str,
        *,
        extra: Sequence[tuple[str, str]] = (),
        max_tokens: int | None = None,
        settings: SamplingSettings | None = None,
        on_draft: DraftCallback | None = None,
        cancel: CancelToken | None = None,
        length_search: bool = True,
        clamp_suffix: bool = True,
        deadline: float | None = None,
        alternatives: int = 1,
        language: str | None = None,
        refine: bool = True,
        confidence: bool = False,
        client: str | None = None,
    ) -> EngineResult:
        """Fill the hole between ``prefix`` and ``suffix``.

        The suffix head is held fixed in the canvas right after the hole, so the hole is
        denoised between fixed text on both sides. The hole length is chosen by denoising
        several lengths as one batch and halving them on how probable the model finds the held
        suffix after each of the first steps, until one (or ``alternatives``) remain. A hole that
        needs more than one canvas (the longest candidate wins) continues on the next canvas:
        the first canvas is committed as plain continuation and the search repeats after it.
        ``deadline`` (time.monotonic()): past it the best draft so far is the answer
        (finish reason "time"). With ``language`` (a tree-sitter grammar name) and ``refine``, a
        fill that breaks the window's syntax is repaired (`repair`). With ``confidence`` the
        result and the drafts give the fill token by token (``tokens``); without, none is built.
        """
        return infill(self.runner, prefix, suffix, extra=extra, max_tokens=max_tokens, settings=settings,
                      on_draft=on_draft, budget=Budget(cancel=cancel, deadline=deadline),
                      length_search=length_search, clamp_suffix=clamp_suffix, alternatives=alternatives,
                      language=language, refine=refine, confidence=confidence)

    @_frees_on_cancel
    @torch.no_grad()
    def infill_holes(self, pieces: Sequence[str], *, extra: Sequence[tuple[str, str]] = (),
                     max_tokens: int | None = None, settings: SamplingSettings | None = None,
                     on_draft: DraftCallback | None = None, cancel: CancelToken | None = None,
                     deadline: float | None = None, language: str | None = None, refine_syntax: bool = True,
                     alternatives: int = 1, confidence: bool = False, client: str | None = None) -> EngineResult:
        """Several holes: ``pieces`` is the fixed text around them (one more than holes); the
        result's ``holes`` has one entry per hole. See `holes` for the options."""
        return infill_holes(self.runner, pieces, extra=extra, max_tokens=max_tokens, settings=settings,
                            on_draft=on_draft, cancel=cancel, deadline=deadline, language=language,
                            refine_syntax=refine_syntax, alternatives=alternatives, confidence=confidence)

    @_frees_on_cancel
    @torch.no_grad()
    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int | None = None,
        settings: SamplingSettings | None = None,
        on_draft: DraftCallback | None = None,
        cancel: CancelToken | None = None,
        deadline: float | None = None,
        client: str | None = None,
    ) -> EngineResult:
        """A chat answer in Gemma's turn format, then plain generation, canvas after canvas, until
        end of turn or ``max_tokens``. The turn markers are encoded as special tokens; what the
        messages say is encoded as plain text (a ``<turn|>`` typed in a message stays text)."""
        ids = self.chat_ids(messages)
        stops = set(self.eos_ids)
        end_turn = self.tokenizer.convert_tokens_to_ids("<turn|>")
        if isinstance(end_turn, int) and end_turn != getattr(self.tokenizer, "unk_token_id", None):
            stops.add(end_turn)
        return fill_canvases(self.runner, ids, [], "", "", "", max_tokens=max_tokens, settings=settings,
                             on_draft=on_draft, budget=Budget(cancel=cancel, deadline=deadline), stops=stops)

    # ------------------------------------------------------------------ rewrite
    @_frees_on_cancel
    @torch.no_grad()
    def edit(
        self,
        prefix: str,
        selection: str,
        suffix: str,
        *,
        instruction: str | None = None,
        strength: float = 0.5,
        extra: Sequence[tuple[str, str]] = (),
        max_tokens: int | None = None,
        settings: SamplingSettings | None = None,
        on_draft: DraftCallback | None = None,
        cancel: CancelToken | None = None,
        length_search: bool = True,
        deadline: float | None = None,
        language: str | None = None,
        refine: bool = True,
        confidence: bool = False,
        client: str | None = None,
    ) -> EngineResult:
        """Rewrite ``selection`` in place; the canvas starts from the selection's tokens.

        ``strength`` (0..1) is how much is re-noised: that fraction of the selection's tokens
        starts as noise, and a position the sampler does not accept returns to the original
        token with probability ``1 - strength`` (else to noise). 0 keeps all that the model
        does not confidently change; 1 regenerates the span from scratch. Selections longer
        than one canvas are rewritten a canvas at a time, left to right. With ``language`` (a
        tree-sitter grammar name) and ``refine``, a rewrite that brings syntax errors into the
        window that the selection did not have is repaired (`repair.repair_rewrite`). With
        ``confidence`` the result and the drafts give the rewrite token by token.
        """
        return edit(self.runner, prefix, selection, suffix, instruction=instruction, strength=strength, extra=extra,
                    max_tokens=max_tokens, settings=settings, on_draft=on_draft,
                    budget=Budget(cancel=cancel, deadline=deadline), length_search=length_search,
                    language=language, refine=refine, confidence=confidence)
