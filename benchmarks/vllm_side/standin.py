"""A stand-in for vLLM's OpenAI server running DiffusionGemma, for CPUs (run with the side venv).

    .vllm-venv/bin/python benchmarks/vllm_side/standin.py --model DIR [--port 0] [--port-file PATH]
        [--host 127.0.0.1] [--served-model-name NAME] [--canvas N] [--max-num-seqs 8]
        [--max-model-len M] [--seed 0]

A real vLLM server cannot run DiffusionGemma on CPU (its diffusion path needs the V2 model runner,
and so Triton on the device). This server answers as one would, with vLLM's own code for
everything but the forward passes: vLLM's routers and their decorators (``/v1/completions`` with
disconnect cancellation, ``/v1/models``, ``/tokenize``, ``/detokenize``, ``/health``,
``/version``, ``/metrics`` with vLLM's HTTP instrumentator), vLLM's exception handlers, vLLM's
``OpenAIServingCompletion`` (request ids, max_tokens, SamplingParams, SSE chunks, usage, stream
errors as ``data: {"error": ...}``), ``OpenAIServingModels`` and ``ServingTokenization``, vLLM's
renderer, input checks, output processor and stop checks; the canvases are the checkpoint's real
ones, denoised step by step as vLLM's DiffusionGemma engine does (`denoiser.py`, `engine.py`).

What it does not do: batched forwards (one request's step at a time, requests interleaved step by
step), ``n > 1``, beam search, ``diffusion_constrained``, chat completions, LoRA, prompt embeds.
The checkpoint's generation_config.json must carry an EntropyBound ``sampler_config``, as vLLM
requires. ``--port 0`` picks a free port; ``--port-file`` receives the port once bound.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import socket
import sys
from argparse import Namespace
from pathlib import Path

import torch
import uvicorn
from denoiser import CanvasModel, CanvasRun
from engine import StandInEngine
from fastapi import FastAPI
from metrics import EngineMetrics
from served import Served, load_served
from vllm.entrypoints.openai.completion import api_router as completion_api
from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion
from vllm.entrypoints.openai.models import api_router as models_api
from vllm.entrypoints.openai.models.protocol import BaseModelPath
from vllm.entrypoints.openai.models.serving import OpenAIServingModels
from vllm.entrypoints.serve.exception_handling.register import init_exception_handler
from vllm.entrypoints.serve.instrumentator import basic, health
from vllm.entrypoints.serve.instrumentator import metrics as metrics_api
from vllm.entrypoints.serve.tokenize import api_router as tokenize_api
from vllm.entrypoints.serve.tokenize.serving import ServingTokenization
from vllm.sampling_params import SamplingParams
from vllm.version import __version__ as VLLM_VERSION

log = logging.getLogger("vllm_standin")


def build_app(served: Served, engine: StandInEngine) -> FastAPI:
    """The app, wired as vLLM's ``build_app`` + ``init_app_state`` wire the real one."""
    app = FastAPI()
    app.state.args = Namespace(log_error_stack=False, sse_keep_alive_interval=0,
                               enable_tokenizer_info_endpoint=False)
    app.state.engine_client = engine
    app.state.enable_server_load_tracking = False
    app.state.server_load_metrics = 0
    models = OpenAIServingModels(engine, [BaseModelPath(name=n, model_path=served.model_dir)  # type: ignore[arg-type]
                                          for n in served.names])
    completion = OpenAIServingCompletion(engine, models, online_renderer=served.online,  # type: ignore[arg-type]
                                         request_logger=None)
    # the real server stamps vllm-<version>-<hash of its VllmConfig>, which cannot be built here
    digest = hashlib.sha256(f"{served.model_dir}:{served.canvas_length}".encode()).hexdigest()[:8]
    completion.system_fingerprint = f"vllm-{VLLM_VERSION}-{digest}"
    app.state.openai_serving_models = models
    app.state.openai_serving_completion = completion
    app.state.serving_tokenization = ServingTokenization(models, served.online, request_logger=None,
                                                         chat_template=None, chat_template_content_format="auto")
    completion_api.attach_router(app)
    models_api.attach_router(app)
    tokenize_api.attach_router(app)
    app.include_router(basic.router)
    app.include_router(health.router)
    metrics_api.attach_router(app)
    init_exception_handler(app)
    return app


def warm_up(model: CanvasModel) -> None:
    """One short canvas, so that the first request does not pay for the first forward's set-up."""
    params = SamplingParams(max_tokens=model.served.canvas_length,
                            extra_args={"diffusion_max_steps": 2, "diffusion_read_only": 1})
    run = CanvasRun(model, [model.served.tokenizer.bos_token_id or 0], params)
    while run.step() is None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="DiffusionGemma checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here")
    parser.add_argument("--served-model-name", nargs="*", default=None)
    parser.add_argument("--canvas", type=int, default=None, help="served canvas (--diffusion-config canvas_length)")
    parser.add_argument("--max-num-seqs", type=int, default=8, help="requests running at once (vLLM's default "
                        "for DiffusionGemma: 8)")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="the server's random seed (vLLM's --seed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.manual_seed(args.seed)
    served = load_served(args.model, canvas_length=args.canvas, max_model_len=args.max_model_len,
                         served_model_name=args.served_model_name)
    try:
        model = CanvasModel(served)
    except ValueError as exc:  # as vLLM refuses such a checkpoint at start
        print(f"error: {exc}", file=sys.stderr)
        return 2
    warm_up(model)
    engine = StandInEngine(model, args.max_num_seqs, EngineMetrics(served.names[0]))
    app = build_app(served, engine)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    app.state.server = server
    if args.port_file:
        Path(args.port_file).write_text(str(port))
    log.info("stand-in vLLM server for %s on http://%s:%d (canvas %d)", served.names[0], args.host, port,
             served.canvas_length)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
