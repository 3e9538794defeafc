"""What vLLM's own code says about ``/v1/completions`` bodies: run with the side venv's python.

    .vllm-venv/bin/python benchmarks/vllm_side/validate.py (--model DIR | --canvas N --vocab V)
        [--canvas N] [--max-model-len M] [--served-model-name NAME ...]

Reads one JSON body per line on stdin and writes one JSON answer per line on stdout, in order,
flushing after each (a caller can keep the process and send more lines). A line may also be
``{"body": {...}, "canvas": N}`` to check that body at another served canvas width.

An answer is ``{"ok": true, "prompts": [...]}`` with, for every prompt of the body, its token
count and the fields of the SamplingParams vLLM's engine would run (``max_tokens`` after the
read-only cap, ``ignore_eos``, ``logprob_token_ids``, ``extra_args``...), or ``{"ok": false,
"status": 400, "error": {...}}``: the status and the ``error`` object vLLM's server answers with
(its ``ErrorResponse``; a refused body's pydantic errors formatted by vLLM's own handler).

With ``--model`` the checks are those of a server running that checkpoint (`served.py`); with
``--canvas``/``--vocab`` alone, those that need only the canvas and the vocabulary (token-id
prompts only).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from served import Served, admit, bare_served, load_served, sampling_params, summary
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
from vllm.entrypoints.serve.exception_handling.handlers.validation import validation_exception_handler


def refused(exc: Exception) -> dict[str, Any]:
    """The server's answer to a request that raised ``exc``, as vLLM's exception handlers build it."""
    if isinstance(exc, ValidationError):
        # FastAPI validates the body as the endpoint's `request: CompletionRequest` argument, so
        # each error's location starts with "body"
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(args=SimpleNamespace(
            log_error_stack=False))), state=SimpleNamespace())
        response = asyncio.run(validation_exception_handler(request, RequestValidationError(errors)))  # type: ignore[arg-type]
        return {"ok": False, "status": response.status_code, "error": json.loads(bytes(response.body))["error"]}
    error = create_error_response(exc)
    return {"ok": False, "status": error.error.code, "error": error.model_dump()["error"]}


def model_missing(request: CompletionRequest, served: Served) -> dict[str, Any] | None:
    """``BaseServing._check_model``: a name the server does not serve is a 404."""
    if not served.names or not request.model or request.model in served.names:
        return None
    error = create_error_response(
        f"The model `{request.model}` does not exist. Valid aliases: {', '.join(served.names)}.",
        err_type="NotFoundError", status_code=HTTPStatus.NOT_FOUND, param="model")
    return {"ok": False, "status": 404, "error": error.model_dump()["error"]}


def check(body: Any, served: Served) -> dict[str, Any]:
    """vLLM's verdict on one body."""
    try:
        request = CompletionRequest.model_validate(body)
        missing = model_missing(request, served)
        if missing is not None:
            return missing
        rendered = asyncio.run(served.online.render_completion(request))
        if isinstance(rendered, ErrorResponse):
            return {"ok": False, "status": rendered.error.code, "error": rendered.model_dump()["error"]}
        prompts = []
        for engine_input in rendered:
            ids = engine_input["prompt_token_ids"]
            admitted = admit(sampling_params(request, served, len(ids)), served, ids)
            prompts.append({"prompt_tokens": len(ids), "sampling_params": summary(admitted)})
        return {"ok": True, "prompts": prompts}
    except Exception as exc:  # every refusal is answered, as the server does, and the next line read
        return refused(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint folder (a server running it)")
    parser.add_argument("--canvas", type=int, help="served canvas length (default: the model's)")
    parser.add_argument("--vocab", type=int, help="vocabulary size (without --model)")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--served-model-name", nargs="*", default=None)
    args = parser.parse_args(argv)
    if args.model:
        served = load_served(args.model, canvas_length=args.canvas, max_model_len=args.max_model_len,
                             served_model_name=args.served_model_name)
    elif args.canvas and args.vocab:
        served = bare_served(args.canvas, args.vocab, names=args.served_model_name,
                             **({"max_model_len": args.max_model_len} if args.max_model_len else {}))
    else:
        parser.error("give --model DIR, or --canvas and --vocab")
    print(json.dumps({"ready": True, "canvas": served.canvas_length, "vocab": served.vocab_size}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            print(json.dumps({"ok": False, "status": None, "error": {"message": f"not JSON: {exc}"}}), flush=True)
            continue
        target = served
        if isinstance(item, dict) and "body" in item:
            if item.get("canvas"):
                target = dataclasses.replace(served, canvas_length=int(item["canvas"]))
            item = item["body"]
        print(json.dumps(check(item, target)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
