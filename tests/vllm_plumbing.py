"""A minimal vLLM-shaped HTTP server for the vLLM engine's plumbing tests (routing, aborts, budgets).

It answers the four routes the engine uses (``/v1/models``, ``/tokenize``, ``/v1/completions``,
``/metrics``) in vLLM's JSON shapes, with the checkpoint's real tokenizer, but it runs no model:
a completion's canvas is its seed (random tokens where nothing is seeded), with knobs a test sets
to make a canvas late, drift from its pins, or score one candidate above the others. What the
canvases contain and how vLLM's own code judges the requests is tested against the stand-in that
runs the tiny DiffusionGemma behind vLLM's own request and response models
(tests/test_vllm_contract.py); this server only lets the HTTP side be driven exactly.

Runs in a thread of the test process (uvicorn), so a test reads what it received directly.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from tokenizers import Tokenizer


@dataclass
class Knobs:
    """How the server answers; a test changes these between requests."""

    delay_s: Callable[[dict[str, Any]], float] = lambda body: 0.0  # before answering a completion
    # the log-probability of every held token asked for, by request body
    held_logprob: Callable[[dict[str, Any]], float] = lambda body: -1.0
    drift: Callable[[dict[str, Any]], bool] = lambda body: False  # emit other tokens at the pins
    # the canvas to emit, from the request and its seed (by default the seed itself)
    shape: Callable[[dict[str, Any], list[int]], list[int]] = lambda body, tokens: tokens
    status: int = 200  # answer every completion with this status (an error body unless 200)
    tokenize_shift: int = 0  # add this to every id /tokenize gives (a server on another tokenizer)
    served_name: str = "diffgemma-test"


@dataclass
class Record:
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every completion body received
    finished: int = 0
    aborted: int = 0  # requests whose client went away before the answer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PlumbingServer:
    def __init__(self, model_dir: Path, canvas_length: int, vocab_size: int) -> None:
        self.model_dir = model_dir
        self.canvas = canvas_length
        self.vocab = vocab_size
        self.knobs = Knobs()
        self.record = Record()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        routes = [Route("/v1/models", self.models), Route("/tokenize", self.tokenize, methods=["POST"]),
                  Route("/v1/completions", self.completions, methods=["POST"]), Route("/metrics", self.metrics)]
        config = uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> PlumbingServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the plumbing server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    async def models(self, request: Request) -> Response:
        card = {"id": self.knobs.served_name, "object": "model", "created": 0, "owned_by": "vllm",
                "root": str(self.model_dir), "parent": None, "max_model_len": 4096}
        return JSONResponse({"object": "list", "data": [card]})

    async def tokenize(self, request: Request) -> Response:
        body = await request.json()
        encoded = self.tokenizer.encode(body["prompt"], add_special_tokens=False)
        ids = [i + self.knobs.tokenize_shift for i in encoded.ids]
        return JSONResponse({"count": len(ids), "max_model_len": 4096, "tokens": ids, "token_strs": None})

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(f"plumbing_finished {self.record.finished}\nplumbing_aborted {self.record.aborted}\n")

    def canvas_of(self, body: dict[str, Any]) -> list[int]:
        xargs = body["vllm_xargs"]
        seed = xargs.get("diffusion_seed_canvas")
        rng = random.Random(len(self.record.bodies))
        tokens = list(seed) if seed is not None else [rng.randrange(10, self.vocab) for _ in range(self.canvas)]
        tokens = self.knobs.shape(body, tokens)
        if self.knobs.drift(body):
            for p in xargs.get("diffusion_pinned", []):
                tokens[p] = (tokens[p] + 1) % self.vocab
        return tokens

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.record.bodies.append(body)
        if self.knobs.status != 200:
            return JSONResponse({"error": {"message": "refused by the plumbing server", "type": "BadRequestError",
                                           "param": None, "code": self.knobs.status}}, status_code=self.knobs.status)
        delay = self.knobs.delay_s(body)
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if await request.is_disconnected():
                self.record.aborted += 1
                return Response(status_code=499)
            await asyncio.sleep(0.01)
        tokens = self.canvas_of(body)
        held = self.knobs.held_logprob(body)
        ids = body.get("logprob_token_ids") or []
        top = [{f"token_id:{t}": -0.1, **{f"token_id:{i}": held for i in ids}} for t in tokens]
        self.record.finished += 1
        return JSONResponse({
            "id": "cmpl-plumbing", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "text": "", "finish_reason": "length", "stop_reason": None,
                         "token_ids": tokens, "prompt_token_ids": body["prompt"],
                         "logprobs": {"text_offset": list(range(len(tokens))), "token_logprobs": [-0.1] * len(tokens),
                                      "tokens": [f"token_id:{t}" for t in tokens], "top_logprobs": top}}],
            "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": len(tokens),
                      "total_tokens": len(body["prompt"]) + len(tokens)},
        })
