"""What ``GET /v1/status`` answers (torch-free): the model and its load state, the engine and what it can
do, the queue, the counters, the daemon itself, and for a team server who asks.

As the other answer types (runtime.api.results), these are the answer's schema in /openapi.json.
"""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict


class StatusLimits(TypedDict):
    """The operator's limits on one request (flags of ``serve``)."""

    max_request_seconds: float | None
    max_steps: int
    max_tokens: int
    fixed_model: bool


class EngineCapabilities(TypedDict):
    """What the loaded engine can do of what the API offers; ``notes`` says how it degrades where it cannot."""

    per_step_drafts: bool  # a draft after every denoising step (else one per finished canvas)
    seed: bool  # a request's seed makes its answer repeatable (else a seed is refused)
    sampling_options: bool  # per-request ``options`` (else refused)
    rewrite_anchor: bool
    syntax_repair: bool
    exact_join: bool  # else timings.held_mismatches says how far an answer is off the held text
    concurrent_requests: bool
    notes: list[str]


class EngineServer(TypedDict):
    """One vLLM server behind the daemon's engine, and how it has answered."""

    url: str
    model: str
    healthy: bool
    requests: int
    failures: int
    aborted: int
    last_error: str | None
    retry_in_s: float


class DeveloperUsage(TypedDict):
    """One developer's counters on a team server (``last_seen``: UTC, ISO 8601)."""

    requests: int
    completed: int
    cancelled: int
    superseded: int
    errors: int
    generated_tokens: int
    last_seen: str | None


class DaemonStatus(TypedDict):
    """``GET /v1/status``: the model and its load state, the engine, the queue, the counters (``errors``
    counts the daemon's own failures, never a client's mistake), and the daemon itself. With a tokens
    file, ``developer`` is who asks and ``developers`` the counters they may see (everyone's for the
    daemon's own token)."""

    state: Literal["unloaded", "loading", "ready", "error"]
    model: str | None
    engine: Literal["local", "vllm"]
    capabilities: EngineCapabilities | None  # None until a model is loaded
    servers: list[EngineServer] | None  # the vLLM engine's servers (None for the local engine)
    default_model: str | None
    loading_model: str | None
    load_progress: str | None
    last_error: str | None
    device: str | None
    dtype: str | None
    memory_bytes: int  # the model's weights
    parameters: int | None
    canvas_length: int | None
    context_length: int | None
    vocab_size: int | None
    sampler: str | None
    limits: StatusLimits
    keep_alive: float
    unload_in_s: float | None
    queue_length: int
    queue_limit: int
    running: str | None
    running_jobs: int
    workers: int
    requests_served: int
    cancelled: int
    superseded: int
    rejected: int
    errors: int
    cache_hits: int
    loads: int
    unloads: int
    mean_latency_ms: float | None
    uptime_s: float
    pid: int
    socket: str | None
    url: str | None
    notice: str | None
    disconnects: int
    api_version: str
    rss_bytes: int | None  # the daemon process's resident memory
    developer: NotRequired[str | None]
    developers: NotRequired[dict[str, DeveloperUsage]]
