"""At start: every vLLM server answers, and runs the checkpoint the daemon tokenizes for.

The daemon lays out canvases in token ids from its own copy of the checkpoint's tokenizer, so a
server that runs another checkpoint would denoise nonsense without any error. Each server is
asked ``GET /v1/models`` (its served name and model path must name the checkpoint given with
``--model``) and ``POST /tokenize`` for a few probe strings, special tokens included, which must
give the ids the local tokenizer gives. Any disagreement is one line and the daemon does not
start.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import httpx

from diffgemma.runtime.api.errors import DiffgemmaError, one_line
from diffgemma.runtime.engine.vllm.servers import Server
from diffgemma.runtime.engine.vllm.tokens import Checkpoint, CheckpointTokenizer

CHECK_TIMEOUT_S = 20.0
# Code with indentation and tabs, non-ASCII text, and the turn markers rewrites and chats use.
PROBES = (
    "def add(a, b):\n    return a + b\n",
    "\tname = 'héllo wörld'  # 😀\n\n",
    "<|turn>user\nRewrite the marked code: keep it short<turn|>\n<|turn>model\n",
)


class VllmStartError(DiffgemmaError):
    """A vLLM server cannot be used: unreachable, not vLLM, or another checkpoint (one line)."""


def server_url(url: str) -> str:
    """A server's base URL as given to --vllm-url: without a trailing slash or OpenAI's ``/v1``."""
    base = url.strip().rstrip("/")
    base = base.removesuffix("/v1")
    if not base.startswith(("http://", "https://")) or base in ("http:/", "https:/"):
        raise VllmStartError(f"--vllm-url {url!r} is not an http:// or https:// URL")
    return base


def _names(values: list[str]) -> set[str]:
    out = set()
    for value in values:
        if value:
            text = value.rstrip("/")
            out |= {text, PurePosixPath(text).name}
    return out - {""}


def _card(url: str, data: Any, checkpoint: Checkpoint) -> dict[str, Any]:
    """The served model that is the checkpoint, from /v1/models; VllmStartError when none is."""
    cards = data.get("data") if isinstance(data, dict) else None
    if not isinstance(cards, list) or not cards or not all(isinstance(c, dict) for c in cards):
        raise VllmStartError(f"{url} does not answer like a vLLM server (GET /v1/models lists no model)")
    ours = _names([checkpoint.name, str(checkpoint.path)])
    for card in cards:
        if _names([str(card.get("id") or ""), str(card.get("root") or "")]) & ours:
            return card
    served = ", ".join(f"{c.get('id')} (from {c.get('root')})" for c in cards)
    raise VllmStartError(f"the vLLM server at {url} serves {served}, not {checkpoint.name}: "
                         f"give --model the checkpoint that server runs")


def _get(http: httpx.Client, method: str, url: str, **kwargs: Any) -> Any:
    try:
        response = http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise VllmStartError(f"cannot reach the vLLM server at {url}: {one_line(exc, type(exc).__name__)}") from None
    if response.status_code != 200:
        raise VllmStartError(f"{url} does not answer like a vLLM server (HTTP {response.status_code})")
    try:
        return response.json()
    except ValueError:
        raise VllmStartError(f"{url} does not answer like a vLLM server (no JSON)") from None


def check_server(http: httpx.Client, url: str, checkpoint: Checkpoint, tokenizer: CheckpointTokenizer) -> Server:
    """The server at ``url`` if it serves ``checkpoint`` and tokenizes as ``tokenizer`` does."""
    card = _card(url, _get(http, "GET", f"{url}/v1/models"), checkpoint)
    for probe in PROBES:
        answer = _get(http, "POST", f"{url}/tokenize", json={"prompt": probe, "add_special_tokens": False,
                                                              "model": card["id"]})
        theirs = answer.get("tokens") if isinstance(answer, dict) else None
        ours = tokenizer.encode_header(probe)
        if theirs != ours:
            raise VllmStartError(f"the vLLM server at {url} tokenizes {probe[:24]!r}... as {str(theirs)[:60]}, "
                                 f"{checkpoint.name}'s tokenizer as {str(ours)[:60]}: give --model the checkpoint "
                                 f"that server runs")
    context = card.get("max_model_len")
    return Server(url=url, model=str(card["id"]), context_length=context if isinstance(context, int) else 0)


def check_servers(urls: list[str], checkpoint: Checkpoint, tokenizer: CheckpointTokenizer) -> list[Server]:
    """Every server checked (`check_server`); the first disagreement raises VllmStartError."""
    bases = [server_url(u) for u in urls]
    if len(set(bases)) != len(bases):
        raise VllmStartError("a --vllm-url is given twice")
    with httpx.Client(timeout=CHECK_TIMEOUT_S) as http:
        return [check_server(http, url, checkpoint, tokenizer) for url in bases]
