"""The served model as vLLM's OpenAI server sees it, and what that server does with a
``/v1/completions`` body before its engine runs it. Runs in the side venv (vLLM's own code).

Each step calls vLLM's own function where one can be called without a GPU engine, in the server's
order (vLLM 0.32/0.33; file references are into the vllm package):

1. ``CompletionRequest`` (entrypoints/openai/completion/protocol.py), as FastAPI validates the body;
2. the model check, then ``OnlineRenderer.render_completion`` over vLLM's HF renderer
   (`TextRenderer`): suffix and prompt-form checks, tokenization with the checkpoint's tokenizer,
   ``TokenizeParams`` length checks;
3. ``get_max_tokens`` and ``CompletionRequest.to_sampling_params`` (openai/completion/serving.py);
4. the engine's admission, ``InputProcessor.process_inputs`` (v1/engine/input_processor.py):
   ``SamplingParams.verify`` with the real ``ModelConfig`` (``_validate_diffusion`` among its
   checks), ``validate_diffusion_sampling_params`` at the served canvas and vocabulary (it also
   caps a read-only request's ``max_tokens`` at the canvas and sets ``ignore_eos``), the prompt's
   length and vocabulary checks, then the generation-config and tokenizer defaults.

The real server also builds a ``VllmConfig``, which refuses a diffusion model on CPU ("Model
Runner V1 does not support: diffusion models"); the three things that step changes for
DiffusionGemma are applied here by hand (`load_served`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vllm.config import ModelConfig
from vllm.config.structured_outputs import StructuredOutputsConfig
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve.utils.api_utils import get_max_tokens
from vllm.renderers.base import BaseRenderer
from vllm.renderers.hf import HfRenderer
from vllm.renderers.online_renderer import OnlineRenderer
from vllm.sampling_params import SamplingParams
from vllm.tokenizers import get_tokenizer
from vllm.utils.diffusion import validate_diffusion_sampling_params
from vllm.v1.engine.input_processor import InputProcessor

# Gemma 4's config hook caps the context at 8192 unless --max-model-len is given
# (model_executor/models/config.py).
GEMMA4_DEFAULT_MAX_MODEL_LEN = 8192


class TextRenderer(HfRenderer):
    """vLLM's HF renderer (text and token-id prompts), set up without the VllmConfig its own
    constructor reads (which a diffusion model cannot have on CPU) and without a multimodal
    processor; its rendering, tokenization and checks are vLLM's code."""

    def __init__(self, model_config: Any, tokenizer: Any) -> None:  # no super().__init__: see above
        self.config = None
        self.model_config = model_config
        self._tokenizer = tokenizer
        self.tokenizer = tokenizer
        self.mm_processor = None

    async def render_cmpl_async(self, prompts: Any, tok_params: Any = None, *, prompt_extras: Any = None,
                                skip_mm_cache: bool = False) -> Any:
        # the async form hands work to a thread pool the skipped constructor builds
        return self.render_cmpl(prompts, tok_params, prompt_extras=prompt_extras, skip_mm_cache=skip_mm_cache)

    async def tokenize_prompt_async(self, prompt: Any, params: Any) -> Any:
        return self.tokenize_prompt(prompt, params)


@dataclass
class Served:
    """One served checkpoint: vLLM's ModelConfig for it, its tokenizer, renderer and canvas."""

    model_dir: str
    model_config: Any  # vllm.config.ModelConfig (a stand-in with the same fields for a bare canvas)
    tokenizer: Any
    canvas_length: int
    names: list[str]
    generation_config: dict[str, Any]
    online: OnlineRenderer

    @property
    def renderer(self) -> TextRenderer:
        return self.online.renderer  # type: ignore[return-value]

    @property
    def vocab_size(self) -> int:
        return int(self.model_config.get_vocab_size())

    @property
    def max_model_len(self) -> int:
        return int(self.model_config.max_model_len)


def load_served(model_dir: str | Path, *, canvas_length: int | None = None, max_model_len: int | None = None,
                served_model_name: list[str] | None = None) -> Served:
    """vLLM's view of ``model_dir`` as ``vllm serve DIR [--diffusion-config '{"canvas_length": N}']``
    would build it."""
    path = str(Path(model_dir).resolve())
    config = ModelConfig(model=path, tokenizer=path, dtype="float32", max_model_len=max_model_len,
                         served_model_name=served_model_name)
    if not config.is_diffusion:
        raise ValueError(f"{path} is not a diffusion model (its config has no canvas_length)")
    if max_model_len is None:
        config.max_model_len = min(config.max_model_len, GEMMA4_DEFAULT_MAX_MODEL_LEN)
    # DiffusionGemma's config hook: no server-wide max_new_tokens cap; the canvas comes from
    # --diffusion-config, else the checkpoint's canvas_length, else 256.
    if "max_new_tokens" not in config.override_generation_config:
        config.override_generation_config["max_new_tokens"] = None
    canvas = canvas_length or getattr(config.hf_config, "canvas_length", None) or 256
    tokenizer = get_tokenizer(path)
    online = OnlineRenderer(config, TextRenderer(config, tokenizer), request_logger=None, chat_template=None,
                            chat_template_content_format="auto")
    return Served(model_dir=path, model_config=config, tokenizer=tokenizer, canvas_length=canvas,
                  names=list(served_model_name) if served_model_name else [path],
                  generation_config=config.try_get_generation_config(), online=online)


def bare_served(canvas_length: int, vocab_size: int, *, max_model_len: int = GEMMA4_DEFAULT_MAX_MODEL_LEN,
                names: list[str] | None = None) -> Served:
    """A served canvas and vocabulary without a checkpoint (say the real 256 and 262,144): the
    checks that read only those run as vLLM's; text prompts need a tokenizer and are refused."""
    config = SimpleNamespace(is_diffusion=True, max_logprobs=20, max_model_len=max_model_len,
                             get_vocab_size=lambda: vocab_size, is_encoder_decoder=False,
                             supports_multimodal_inputs=True, runner_type="generate", model="",
                             get_diff_sampling_param=dict, override_generation_config={},
                             hf_config=SimpleNamespace(model_type="diffusion_gemma"), enable_prompt_embeds=False)
    online = OnlineRenderer(config, TextRenderer(config, None), request_logger=None,  # type: ignore[arg-type]
                            chat_template=None, chat_template_content_format="auto")
    return Served(model_dir="", model_config=config, tokenizer=None, canvas_length=canvas_length,
                  names=names or [], generation_config={}, online=online)


def sampling_params(request: CompletionRequest, served: Served, prompt_len: int) -> SamplingParams:
    """The SamplingParams ``OpenAIServingCompletion`` builds for one prompt of ``request``."""
    defaults = served.model_config.get_diff_sampling_param()
    max_tokens = get_max_tokens(served.max_model_len, request.max_tokens, prompt_len, defaults, None,
                                truncate_prompt_tokens=request.truncate_prompt_tokens)
    return request.to_sampling_params(max_tokens, defaults)


def admit(params: SamplingParams, served: Served, prompt_ids: list[int]) -> SamplingParams:
    """What the engine's input processor checks and fills in before a request runs; raises what it
    raises (``VLLMValidationError`` and the like). Returns the engine's own copy of the params."""
    config, tokenizer = served.model_config, served.tokenizer
    params.verify(config, None, StructuredOutputsConfig(), tokenizer)
    validate_diffusion_sampling_params(params, canvas_length=served.canvas_length, vocab_size=served.vocab_size)
    # vLLM's own prompt checks, run on a stand-in for the processor and renderer they belong to
    processor = SimpleNamespace(skip_prompt_length_check=False, model_config=config,
                                supports_mm_inputs=config.supports_multimodal_inputs, mm_encoder_cache_size=0)
    InputProcessor._validate_prompt_len(processor, len(prompt_ids), "decoder")  # type: ignore[arg-type]
    # (without a tokenizer vLLM skips the vocabulary check; a bare canvas checks the ids all the same)
    renderer = served.renderer if tokenizer is not None else SimpleNamespace(
        tokenizer=SimpleNamespace(max_token_id=served.vocab_size - 1), model_config=config)
    BaseRenderer.validate_token_ids(renderer, prompt_ids)  # type: ignore[arg-type]
    admitted = params.clone()
    if admitted.max_tokens is None:
        admitted.max_tokens = served.max_model_len - len(prompt_ids)
    if tokenizer is not None:
        admitted.update_from_generation_config(served.generation_config, tokenizer.eos_token_id)
        admitted.update_from_tokenizer(tokenizer)
    return admitted


def summary(params: SamplingParams) -> dict[str, Any]:
    """The admitted request's fields that matter to a diffusion client, JSON-ready."""
    return json.loads(json.dumps({
        "max_tokens": params.max_tokens, "ignore_eos": params.ignore_eos, "temperature": params.temperature,
        "logprobs": params.logprobs, "num_logprobs": params.num_logprobs,
        "logprob_token_ids": params.logprob_token_ids, "extra_args": params.extra_args,
        "output_kind": params.output_kind.name, "eos_token_id": params.eos_token_id,
        "stop_token_ids": params.stop_token_ids, "skip_special_tokens": params.skip_special_tokens,
    }, default=str))
