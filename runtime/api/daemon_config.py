"""What a daemon is started with, shared by the process that serves and the front ends that start it.

``DaemonConfig`` is the resolved setting of one daemon: `diffgemma serve` builds it from its
flags (and their environment variables), a background start turns it back into those flags
(``argv``), and the client side uses its address to find the daemon, its pid file and its log.

A start that fails says why in ``DaemonStartError.code``. A daemon started in the background
writes that code to a small JSON start report (``write_start_report``), so the process that
started it can tell a lost start race (another daemon took the address first: use that one)
from a real failure without reading any message.

Torch-free and light: the front ends import it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from diffgemma.runtime.api import config, paths
from diffgemma.runtime.api.errors import DiffgemmaError

ADDRESS_TAKEN = "address_taken"  # another daemon holds the address: a lost start race, not a failure
START_FAILED = "start_failed"
# The daemon came up but the model it was started with did not load; it has shut down again.
# The same word as the wire's ErrorCode.MODEL_LOAD_FAILED, so a front end reports it alike.
MODEL_LOAD_FAILED = "model_load_failed"
# A daemon holds the address but does not answer (stopped with SIGSTOP, or stuck).
NOT_ANSWERING = "daemon_not_answering"


class DaemonStartError(DiffgemmaError, RuntimeError):
    """The daemon cannot start (address in use, another daemon, bad option); one line.

    ``code`` says why in a form other code may act on (the message is for people only).
    """

    def __init__(self, message: str, code: str = START_FAILED) -> None:
        super().__init__(message)
        self.code = code


def lost_start_race(error: BaseException | None) -> bool:
    """True when a start failed only because another daemon took the address first (then use it).
    Decided on the error's code, never on its wording."""
    return isinstance(error, DaemonStartError) and error.code == ADDRESS_TAKEN


# --- the start report: how a background daemon's failed start reaches the process that started it ---


def write_start_report(path: Path, error: DaemonStartError) -> None:
    """Record why this start failed (best effort: a report that cannot be written is no report)."""
    with contextlib.suppress(OSError):
        path.write_text(json.dumps({"pid": os.getpid(), "code": error.code, "message": str(error)}) + "\n")


def read_start_report(path: Path) -> DaemonStartError | None:
    """The failed start a report records, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("code"), str):
        return None
    return DaemonStartError(str(data.get("message") or "the daemon did not start"), data["code"])


@dataclass
class DaemonConfig:
    model: str | None = None
    socket: Path | None = None  # None with host/port unset: the default socket
    host: str | None = None
    port: int | None = None
    keep_alive: float = config.DEFAULT_KEEP_ALIVE_S
    max_body: int = config.DEFAULT_MAX_BODY
    max_queue: int = config.DEFAULT_MAX_QUEUE
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None  # "4bit": quantize an unquantized checkpoint while loading
    preload: bool = True  # load the default model at start instead of on the first request
    max_request_seconds: float = config.DEFAULT_MAX_REQUEST_SECONDS
    max_steps: int = config.DEFAULT_MAX_STEPS
    max_tokens: int = config.DEFAULT_MAX_TOKENS
    allow_origins: tuple[str, ...] = ()
    allow_models: tuple[str, ...] = ()
    fixed_model: bool = False
    sampler: str | None = None  # None: the engine's default (stream)
    engine: str = "local"  # "vllm": canvases go to the vLLM servers in vllm_urls
    vllm_urls: tuple[str, ...] = ()
    tokens_file: Path | None = None  # TCP: the developers' tokens (runtime/daemon/team.py)
    tls_cert: Path | None = None  # TCP: serve HTTPS with this certificate (chain) ...
    tls_key: Path | None = None  # ... and its private key

    @property
    def tcp(self) -> bool:
        return self.port is not None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def tcp_host(self) -> str:
        """The host a TCP daemon listens on: loopback unless --host names another."""
        return self.host or "127.0.0.1"

    def socket_path(self) -> Path:
        return Path(self.socket).expanduser() if self.socket else config.default_socket_path()

    @property
    def address(self) -> Path | str:
        if self.tcp:
            return paths.tcp_address(self.tcp_host, int(self.port or 0))
        return self.socket_path()

    def describe(self) -> str:
        """The daemon's address: its socket path, or the URL clients use (an IPv6 host in brackets)."""
        if not self.tcp:
            return str(self.socket_path())
        host = f"[{self.tcp_host}]" if ":" in self.tcp_host else self.tcp_host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def argv(self) -> list[str]:
        """The `diffgemma serve` arguments that reproduce this configuration (for background starts).

        Settings at their default are left out, so the started daemon still reads them from the
        environment (DIFFGEMMA_KEEP_ALIVE, DIFFGEMMA_DEVICE, ...) exactly as `diffgemma serve` does.
        """
        args = ["--max-body", str(self.max_body), "--queue", str(self.max_queue)]
        if self.keep_alive != config.DEFAULT_KEEP_ALIVE_S:
            args += ["--keep-alive", repr(self.keep_alive)]
        if self.tcp:
            args += ["--host", self.tcp_host, "--port", str(self.port)]
        else:
            args += ["--socket", str(self.socket_path())]
        for flag, value in (("--model", self.model), ("--device", self.device), ("--dtype", self.dtype),
                            ("--quantize", self.quantize), ("--sampler", self.sampler),
                            ("--tokens-file", self.tokens_file), ("--tls-cert", self.tls_cert),
                            ("--tls-key", self.tls_key)):
            if value:
                args += [flag, str(value)]
        if not self.preload:
            args.append("--no-preload")
        if self.max_request_seconds != config.DEFAULT_MAX_REQUEST_SECONDS:
            args += ["--max-request-seconds", repr(float(self.max_request_seconds))]
        if self.max_steps != config.DEFAULT_MAX_STEPS:
            args += ["--max-steps", str(self.max_steps)]
        if self.max_tokens != config.DEFAULT_MAX_TOKENS:
            args += ["--max-tokens", str(self.max_tokens)]
        for origin in self.allow_origins:
            args += ["--allow-origin", origin]
        for model in self.allow_models:
            args += ["--allow-model", model]
        if self.fixed_model:
            args.append("--fixed-model")
        if self.engine != "local":
            args += ["--engine", self.engine]
        for url in self.vllm_urls:
            args += ["--vllm-url", url]
        return args

    def check(self) -> None:
        """Refuse settings no daemon can run with (one line each, before anything is bound)."""
        if self.max_queue < 1:
            raise DaemonStartError("--queue must be at least 1")
        if self.max_body < config.MIN_MAX_BODY:
            raise DaemonStartError(f"--max-body must be at least {config.MIN_MAX_BODY} bytes")
        if not 0 <= self.max_request_seconds <= config.MAX_REQUEST_SECONDS:
            raise DaemonStartError(f"--max-request-seconds must be between 0 (no limit) and "
                                   f"{config.MAX_REQUEST_SECONDS:g}")
        if not 1 <= self.max_steps <= config.MAX_STEPS:
            raise DaemonStartError(f"--max-steps must be between 1 and {config.MAX_STEPS}")
        if not 1 <= self.max_tokens <= config.MAX_TOKENS_LIMIT:
            raise DaemonStartError(f"--max-tokens must be between 1 and {config.MAX_TOKENS_LIMIT}")
        if self.sampler is not None and self.sampler not in config.SAMPLERS:
            raise DaemonStartError(f"unknown --sampler {self.sampler!r}; use {' or '.join(config.SAMPLERS)}")
        self._check_engine()
        if (self.tls_cert is None) != (self.tls_key is None):
            raise DaemonStartError("--tls-cert and --tls-key go together (a certificate and its private key)")
        for flag, value in (("--tokens-file", self.tokens_file), ("--tls-cert", self.tls_cert)):
            if value is not None and not self.tcp:
                raise DaemonStartError(f"{flag} needs --port: a Unix socket is reached by its owner only")

    def _check_engine(self) -> None:
        if self.engine not in config.ENGINES:
            raise DaemonStartError(f"unknown --engine {self.engine!r}; use {' or '.join(config.ENGINES)}")
        if self.engine == "local":
            if self.vllm_urls:
                raise DaemonStartError("--vllm-url needs --engine vllm")
            return
        if not self.vllm_urls:
            raise DaemonStartError("--engine vllm needs --vllm-url: the URL of a vLLM server (repeatable)")
        local_only = [flag for flag, value in (("--device", self.device), ("--dtype", self.dtype),
                                                ("--quantize", self.quantize), ("--sampler", self.sampler))
                      if value]
        if local_only or self.allow_models:
            named = ", ".join([*local_only, *(["--allow-model"] if self.allow_models else [])])
            raise DaemonStartError(f"{named}: not with --engine vllm (the vLLM server runs the model; "
                                   f"--model names the checkpoint it serves)")
