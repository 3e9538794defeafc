"""One request's canvases, denoised as vLLM's DiffusionGemma engine denoises them, with the
checkpoint's real weights on transformers' ``DiffusionGemmaForBlockDiffusion``.

transformers gives the encoder, the decoder and the logits; everything that decides what a step
does is vLLM's own code, called on CPU (model_executor/models/diffusion_gemma.py): the per-request
state (``DiffusionGemmaRequestStates``), the temperature schedule (``_denoise_temperature``), the
row statistics (``sample_row_stats_reference``, the non-CUDA path) and the step itself
(``_compiled_sample_step``, run eagerly): entropy-bound accept, re-noise, pinned positions reset to
the seed on the input with their self-conditioning zeroed, convergence, and the emitted canvas,
which is the model's argmax at every position, pins included. The extra args are applied as
``DiffusionSampler.add_request`` applies them, and the self-conditioning soft embedding the step
computes is fed to transformers' self-conditioning block, as vLLM's ``_apply_self_conditioning``
does. Log-probabilities are stashed on the converging step as the sampler stashes them (raw logits
for a read-only request, the schedule's temperature otherwise): the argmax first, then the
request's ``logprob_token_ids`` (or its top ``logprobs``), and the argmax's rank.

A request that is not read-only continues block by block, as in vLLM: the converged canvas is
committed (encoded into the cache), emitted, and a new random canvas starts, its pins still held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from served import Served
from vllm.model_executor.models import diffusion_gemma as vdg
from vllm.model_executor.models.diffusion_gemma_sampler import sample_row_stats_reference
from vllm.sampling_params import SamplingParams
from vllm.v1.outputs import LogprobsLists
from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p


def _eager(fn: Any) -> Any:
    """The Python function under torch.compile's wrappers (no Inductor on this CPU path)."""
    while hasattr(fn, "_torchdynamo_orig_callable"):
        fn = fn._torchdynamo_orig_callable
    return fn


_sample_step = _eager(vdg._compiled_sample_step)
SLOT = torch.zeros(1, dtype=torch.int64)  # every run holds one request, in slot 0


class CanvasModel:
    """The checkpoint, loaded once, and the sampler settings vLLM reads from its generation config."""

    def __init__(self, served: Served) -> None:
        from transformers import DiffusionGemmaForBlockDiffusion

        gen = served.generation_config
        sampler = gen.get("sampler_config") or {}
        # DiffusionGemmaModelState.custom_sampler refuses a checkpoint without these
        if "EntropyBound" not in sampler.get("_cls_name", ""):
            raise ValueError("DiffusionGemma requires an EntropyBound sampler_config")
        self.entropy_bound = sampler.get("entropy_bound")
        if self.entropy_bound is None or self.entropy_bound <= 0:
            raise ValueError(f"entropy_bound must be a positive float (got {self.entropy_bound})")
        self.served = served
        self.model = DiffusionGemmaForBlockDiffusion.from_pretrained(served.model_dir, dtype=torch.float32).eval()
        self.text_config = self.model.config.get_text_config()
        self.max_denoising_steps = int(gen.get("max_denoising_steps", 48))
        self.stability = int(gen["stability_threshold"]) + 1  # vLLM's history includes the current step
        self.t_min, self.t_max = float(gen["t_min"]), float(gen["t_max"])
        self.confidence_threshold = float(gen["confidence_threshold"])
        decoder = self.model.model.decoder
        self.embed_weight = decoder.embed_tokens.weight.detach()
        self.normalizer = decoder.embed_tokens.embed_scale.detach()
        self._soft: torch.Tensor | None = None
        decoder.self_conditioning.register_forward_pre_hook(self._feed_soft_embeddings)

    def _feed_soft_embeddings(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        # transformers passes zeros when given no self-conditioning logits: hand it vLLM's soft
        # embedding (probs @ embed * normalizer, zero where pinned) instead
        if self._soft is None:
            return None
        return (args[0], self._soft.to(args[0].dtype), *args[2:])

    @torch.no_grad()
    def encode(self, cache: Any, ids: list[int], start: int) -> None:
        """Causal forward over ``ids`` at positions start.., appended to ``cache`` (prefill or commit)."""
        tokens = torch.tensor([ids], dtype=torch.long)
        positions = torch.arange(start, start + len(ids)).unsqueeze(0)
        self.model.model.encoder(input_ids=tokens, past_key_values=cache, position_ids=positions)

    @torch.no_grad()
    def logits(self, cache: Any, canvas: torch.Tensor, start: int, soft: torch.Tensor) -> torch.Tensor:
        """(W, vocab) logits of a denoise forward over ``canvas`` (bidirectional over cache + canvas)."""
        positions = torch.arange(start, start + canvas.shape[-1]).unsqueeze(0)
        self._soft = soft.unsqueeze(0)
        try:
            out = self.model(decoder_input_ids=canvas.unsqueeze(0), past_key_values=cache,
                             decoder_position_ids=positions)
        finally:
            self._soft = None
        return out.logits[0].float()


@dataclass
class Emission:
    """A canvas the engine emitted: its tokens and their log-probability rows."""

    tokens: list[int]
    logprobs: LogprobsLists | None


class CanvasRun:
    """One request in vLLM's DiffusionGemma engine: ``step()`` is one engine step for it."""

    def __init__(self, model: CanvasModel, prompt_ids: list[int], params: SamplingParams) -> None:
        from transformers import DynamicCache

        self.model = model
        self.params = params
        served = model.served
        self.states = vdg.DiffusionGemmaRequestStates(
            max_num_reqs=1, canvas_length=served.canvas_length, vocab_size=served.vocab_size,
            max_denoising_steps=model.max_denoising_steps, device=torch.device("cpu"),
            hidden_size=model.text_config.hidden_size, stability_threshold=model.stability)
        self.states.add_request(0)
        self._apply_extra_args(params.extra_args or {})
        self.width = int(self.states.canvas_width_np[0])
        self.cache = DynamicCache(config=model.model.config.get_text_config(decoder=True))
        self.position = len(prompt_ids)
        self.prompt_ids = prompt_ids
        self.prefilled = False
        self._stash: LogprobsLists | None = None
        self.sampled = torch.zeros(1, served.canvas_length, dtype=torch.int32)
        self.num_sampled = torch.zeros(1, dtype=torch.int32)
        self.draft = torch.zeros(1, served.canvas_length, dtype=torch.int64)

    def _apply_extra_args(self, extra: dict[str, Any]) -> None:
        """``DiffusionSampler.add_request``: step cap, width, seed, pins, read-only (a constrained
        canvas is refused at admission, `engine.StandInEngine`)."""
        states = self.states
        cap = extra.get("diffusion_max_steps")
        if cap is not None:
            cap = max(1, min(int(cap), states.max_denoising_steps))
            states.max_steps[0].fill_(cap)
            if cap == 1:
                states.single_step_slots.add(0)
        width = extra.get("diffusion_canvas_length")
        if width:
            states.canvas_width_np[0] = max(1, min(int(width), states.canvas_length))
        seed = extra.get("diffusion_seed_canvas")
        if seed is not None:
            if len(seed) != int(states.canvas_width_np[0]):
                raise ValueError(f"diffusion_seed_canvas must hold exactly {states.canvas_width_np[0]} ids, "
                                 f"got {len(seed)}")
            states.set_seed_canvas(0, [int(t) for t in seed])
        pins = extra.get("diffusion_pinned")
        if pins and seed is not None:
            states.set_pins(0, [int(p) for p in pins])
        if extra.get("diffusion_read_only"):
            states.set_read_only(0)

    def _prefill(self) -> None:
        """Encode the prompt, then ``_finish_prefills``: a random canvas, the seed over it."""
        self.model.encode(self.cache, self.prompt_ids, 0)
        self.states.init_canvas(SLOT)
        self.states.apply_seed_canvases(np.array([0]), SLOT)
        self.states.is_encoder_phase.index_fill_(0, SLOT, False)
        self.prefilled = True

    def step(self) -> Emission | None:
        """One engine step: prefill, a denoise step or a commit; the canvas when one is emitted."""
        if not self.prefilled:
            self._prefill()
            return None
        states, width = self.states, self.width
        committing = bool(states.is_encoder_phase[0])
        vocab = self.model.served.vocab_size
        if committing:  # the commit forward writes the converged canvas into the cache
            self.model.encode(self.cache, states.argmax_canvas[0, :width].tolist(), self.position)
            logits = torch.zeros(width, vocab)
        else:
            logits = self.model.logits(self.cache, states.canvas[0, :width], self.position,
                                       states.self_conditioning_embeds[0, :width])
            logits = self._top_k_top_p(logits)
        self._sample(logits, committing)
        count = int(self.num_sampled[0])
        if committing:
            self.position += width
        if count == 0:
            return None
        stash, self._stash = self._stash, None
        return Emission(tokens=self.sampled[0, :count].tolist(), logprobs=stash)

    def _top_k_top_p(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.params
        top_k = p.top_k if 0 < p.top_k < logits.shape[-1] else None
        top_p = p.top_p if p.top_p < 1.0 else None
        if top_k is None and top_p is None:
            return logits
        rows = logits.shape[0]
        return apply_top_k_top_p(logits, None if top_k is None else torch.full((rows,), top_k),
                                 None if top_p is None else torch.full((rows,), top_p))

    def _sample(self, logits: torch.Tensor, committing: bool) -> None:
        states, width, model = self.states, self.width, self.model
        compute_sc = 0 not in states.single_step_slots
        temp = vdg._denoise_temperature(states.step, SLOT, float(states.max_denoising_steps), model.t_min,
                                        model.t_max)
        stats = sample_row_stats_reference(logits, temp, width, model.embed_weight.dtype if compute_sc else None)
        argmax, sample, entropy, probs = stats
        _sample_step(
            sample.view(1, width), argmax.view(1, width), entropy.view(1, width),
            probs.view(1, width, -1) if probs is not None else None,
            SLOT, SLOT, SLOT, torch.tensor([width]),
            states.canvas[:, :width], states.argmax_canvas[:, :width], states.step, states.is_encoder_phase,
            states.confident, states.self_conditioning_embeds[:, :width], model.embed_weight, model.normalizer,
            states.accepted_canvas_history[:, :, :width], states.accepted_canvas_history_len, states.max_steps,
            states.pin_mask[:, :width], states.seed_canvas[:, :width], states.read_only,
            self.sampled[:, :width], self.num_sampled, self.draft,
            confidence_threshold=model.confidence_threshold, vocab_size=model.served.vocab_size, CL=width,
            ST=states.stability_threshold, entropy_bound=model.entropy_bound, sc_vocab_start=0,
            sc_vocab_end=model.served.vocab_size, tp_size=1, tp_group_name="", compute_sc=compute_sc)
        converged = bool(states.is_encoder_phase[0]) or int(self.num_sampled[0]) > 0
        if self._wants_logprobs() and converged and not committing:
            raw = 0 in states.read_only_slots  # read-only requests report logprobs at temperature 1
            source = logits if raw else logits / temp.clamp(min=1e-10)
            self._stash = self._scores(source, (logits / temp.clamp(min=1e-10)).argmax(dim=-1))

    def _wants_logprobs(self) -> bool:
        return self.params.logprobs is not None or bool(self.params.logprob_token_ids)

    def _scores(self, rows: torch.Tensor, argmax: torch.Tensor) -> LogprobsLists:
        """``compute_topk_scores`` (a Triton kernel in vLLM): the argmax's log-probability and rank,
        then the request's token ids' (or the top ``logprobs``)."""
        ids = self.params.logprob_token_ids
        columns = argmax.unsqueeze(1)
        if ids:
            columns = torch.cat([columns, torch.tensor(ids).expand(rows.shape[0], -1)], dim=1)
        elif self.params.logprobs:
            k = rows.shape[-1] if self.params.logprobs == -1 else self.params.logprobs
            columns = torch.cat([columns, torch.topk(rows, k, dim=-1).indices], dim=1)
        scores = torch.log_softmax(rows.float(), dim=-1).gather(1, columns)
        ranks = (rows >= rows.gather(1, argmax.unsqueeze(1))).sum(dim=1)
        return LogprobsLists(columns.numpy(), scores.numpy(), ranks.numpy(), None)
