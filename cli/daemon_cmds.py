"""`diffgemma serve`, `diffgemma daemon start|stop|status` and `diffgemma status`.

Thin wrappers over diffgemma.runtime.daemon.lifecycle; every import that costs anything happens inside the
command functions so `diffgemma --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from diffgemma.cli.errors import DaemonDown, UsageProblem, guarded
from diffgemma.cli.options import int_parser, reflow
from diffgemma.runtime.api.protocol import MAX_STEPS, MAX_TOKENS_LIMIT
from diffgemma.runtime.daemon.lifecycle import LIMIT_FLAGS  # light: the flag table both command lines share

SERVE_HELP = """Run the daemon in the foreground: it owns the model and answers infill and edit requests.

By default it listens on a Unix socket in your runtime directory (mode 0600 inside a 0700
directory), so only you can reach it. With --port it listens on TCP instead (loopback unless
--host says otherwise) and every request but /health must carry the bearer token stored in the
state directory (`Authorization: Bearer <token>`).

Besides its own API (/v1/infill, /v1/edit, /v1/status, ...; schema at /openapi.json) it speaks
llama.cpp's /infill, /completion, /props and /tokenize (llama.vim, llama.vscode), OpenAI's
/v1/completions (with a suffix or a FIM template in the prompt), /v1/chat/completions and
/v1/models (Continue, Tabby, the openai SDK) and Mistral's /v1/fim/completions, so those
clients work unchanged. Errors are {"error": {"message", "type", "code"}} everywhere.

Every request gets at most --max-request-seconds (then its best draft so far is the answer),
--max-steps per canvas and --max-tokens. Over TCP, browser origins are refused unless
--allow-origin names them, and requests may name only the default model, the cached real one
and those given with --allow-model; --fixed-model forbids loading or unloading by request.

An idle model is unloaded after --keep-alive seconds and reloaded by the next request. Stop it
with Ctrl-C or SIGTERM."""

SERVE_EPILOG = """[bold]Examples[/bold]

  diffgemma serve --model google/diffusiongemma-26B-A4B-it
  diffgemma serve --model ./checkpoint --socket /tmp/dg.sock
  diffgemma serve --port 8012                    TCP on 127.0.0.1:8012, token required
  diffgemma serve --keep-alive 0                 unload the model after every request
  curl --unix-socket "$XDG_RUNTIME_DIR/diffgemma/daemon.sock" http://x/v1/status

[bold]For llama.vim[/bold]: serve with --port 8012, then set g:llama_config.endpoint to
http://127.0.0.1:8012/infill and api_key to the token file's contents."""

DAEMON_HELP = """Run the daemon in the background and manage it.

[cyan]start[/cyan] launches `diffgemma serve` detached from the terminal (log and pid file in the
state directory) and waits until it answers; [cyan]stop[/cyan] sends it SIGTERM and waits for a
clean exit; [cyan]status[/cyan] prints what it reports. The front ends (`diffgemma infill`, the
language server) start it themselves when none answers."""

DAEMON_EPILOG = """[bold]Examples[/bold]

  diffgemma daemon start --model ./checkpoint
  diffgemma daemon start --port 8012             a TCP daemon (token required)
  diffgemma daemon status --json
  diffgemma daemon stop"""

STATUS_HELP = """Show the daemon, the model it holds, the device and the memory in use."""

STATUS_EPILOG = """[bold]Examples[/bold]

  diffgemma status
  diffgemma status --json | jq .memory_bytes
  diffgemma status --socket /tmp/dg.sock

Exits with status 5 when no daemon answers."""

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", envvar="DIFFGEMMA_MODEL", show_envvar=True, show_default=False,
    help="Default model: a checkpoint directory or a Hugging Face id in the local cache.")]
SocketOpt = Annotated[Path | None, typer.Option(
    "--socket", envvar="DIFFGEMMA_SOCKET", show_envvar=True, show_default=False,
    help="Unix socket path (default: daemon.sock in the user runtime directory).")]
HostOpt = Annotated[str | None, typer.Option(
    "--host", show_default=False, help="With --port: the address to listen on (default 127.0.0.1).")]
# Integers are ASCII digits within range (click's int also takes other scripts' digits).
PortOpt = Annotated[int | None, typer.Option(
    "--port", parser=int_parser(0, 65535), metavar="INTEGER", show_default=False,
    help="Listen on TCP instead of the Unix socket.")]
KeepAliveOpt = Annotated[float, typer.Option(
    "--keep-alive", envvar="DIFFGEMMA_KEEP_ALIVE", show_envvar=True,
    help="Seconds an idle model stays loaded; 0 unloads after each request, negative keeps it.")]
MaxBodyOpt = Annotated[int, typer.Option("--max-body", parser=int_parser(1024, 2**31 - 1), metavar="INTEGER",
                                         help="Largest request body, in bytes.")]
QueueOpt = Annotated[int, typer.Option("--queue", parser=int_parser(1, 4096), metavar="INTEGER",
                                       help="Most requests waiting at once (503 beyond).")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", envvar="DIFFGEMMA_DEVICE", show_default=False, help="cpu, cuda, cuda:1, ... (default: auto).")]
DtypeOpt = Annotated[str | None, typer.Option(
    "--dtype", show_default=False, help="float32, bfloat16 or float16 (default: auto for the device).")]
QuantizeOpt = Annotated[str | None, typer.Option(
    "--quantize", envvar="DIFFGEMMA_QUANTIZE", show_default=False,
    help="4bit: quantize an unquantized checkpoint while loading, layer by layer (pre-quantized "
         "checkpoints from `diffgemma quantize` need no flag).")]
NoPreloadOpt = Annotated[bool, typer.Option(
    "--no-preload", help="Load the model on the first request instead of at start.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the daemon's status as one JSON object.")]

_FLAGS = {flag.dest: flag for flag in LIMIT_FLAGS}


def _help(dest: str) -> str:
    text = _FLAGS[dest].help
    return text[0].upper() + text[1:] + "."


MaxRequestSecondsOpt = Annotated[float, typer.Option(
    "--max-request-seconds", min=0, max=86400, help=_help("max_request_seconds"))]
MaxStepsOpt = Annotated[int, typer.Option("--max-steps", parser=int_parser(1, MAX_STEPS), metavar="INTEGER",
                                          help=_help("max_steps"))]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", parser=int_parser(1, MAX_TOKENS_LIMIT), metavar="INTEGER",
                                           help=_help("max_tokens"))]
AllowOriginOpt = Annotated[list[str] | None, typer.Option(
    "--allow-origin", show_default=False, help=_help("allow_origins"))]
AllowModelOpt = Annotated[list[str] | None, typer.Option(
    "--allow-model", show_default=False, help=_help("allow_models"))]
FixedModelOpt = Annotated[bool, typer.Option("--fixed-model", help=_help("fixed_model"))]
SamplerOpt = Annotated[str | None, typer.Option(
    "--sampler", show_default=False, help=_help("sampler"))]


def _limits(max_request_seconds: float, max_steps: int, max_tokens: int, allow_origin: list[str] | None,
            allow_model: list[str] | None, fixed_model: bool, sampler: str | None) -> dict[str, Any]:
    if sampler is not None and sampler not in (_FLAGS["sampler"].choices or ()):
        raise UsageProblem(f"unknown sampler {sampler!r} for --sampler; use stream or stock")
    return {"max_request_seconds": max_request_seconds, "max_steps": max_steps, "max_tokens": max_tokens,
            "allow_origins": tuple(allow_origin or ()), "allow_models": tuple(allow_model or ()),
            "fixed_model": fixed_model, "sampler": sampler}


def _quantize(value: str | None) -> str | None:
    if value in (None, "", "none"):
        return None
    if value.lower() not in ("4bit", "nf4"):
        from diffgemma.cli.errors import UsageProblem

        raise UsageProblem(f"unknown quantization {value!r} for --quantize; use 4bit")
    return "4bit"


def _config(model: str | None = None, socket: Path | None = None, host: str | None = None,
            port: int | None = None, **kwargs: Any) -> Any:
    from diffgemma.runtime.daemon.lifecycle import DaemonConfig

    if socket is not None and port is not None:
        raise UsageProblem("use either --socket or --port, not both")
    if host is not None and port is None:
        raise UsageProblem("--host needs --port")
    return DaemonConfig(model=model, socket=socket, host=host, port=port, **kwargs)


def _human_bytes(n: int | None) -> str:
    if not n:
        return "0 B"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _status_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    where = status.get("socket") or status.get("url") or "?"
    model = status.get("model") or status.get("loading_model") or status.get("default_model") or "none"
    state = status.get("state", "?")
    if state == "loading" and status.get("load_progress"):
        state = f"loading ({status['load_progress']})"
    if state == "error" and status.get("last_error"):
        state = f"error: {status['last_error']}"
    latency = status.get("mean_latency_ms")
    unload = status.get("unload_in_s")
    keep = status.get("keep_alive")
    rows = [
        ("daemon", f"running, pid {status.get('pid')}, on {where}, up {status.get('uptime_s', 0):.0f} s"),
        ("model", f"{model} ({state})"),
        ("device", f"{status.get('device') or '-'} {status.get('dtype') or ''}".strip()),
        ("memory", _human_bytes(status.get("memory_bytes"))),
        ("queue", f"{status.get('queue_length', 0)} waiting of {status.get('queue_limit', '?')}"
                  + (f", running {status['running']}" if status.get("running") else "")),
        ("requests", f"{status.get('requests_served', 0)} served, {status.get('cancelled', 0)} cancelled, "
                     f"{status.get('errors', 0)} failed, {status.get('rejected', 0)} rejected"),
        ("cache hits", str(status.get("cache_hits", 0))),
        ("mean latency", f"{latency:.0f} ms" if isinstance(latency, int | float) else "-"),
        ("keep alive", (f"{keep:g} s" if isinstance(keep, int | float) else "-")
                       + (f", unloads in {unload:.0f} s" if isinstance(unload, int | float) else "")),
    ]
    return rows


def print_status(status: dict[str, Any] | None, address: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status if status is not None else {"running": False, "address": address}, indent=2))
    elif status is None:
        # Not an answer but an error: stdout stays clean for pipes.
        print(f"daemon: not running (nothing answers on {address})", file=sys.stderr)
    elif sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold cyan")
        table.add_column()
        for key, value in _status_rows(status):
            table.add_row(key, value)
        Console().print(table)
    else:
        for key, value in _status_rows(status):
            print(f"{key}: {value}")
    if status is None:
        raise typer.Exit(DaemonDown.code)


@guarded
def serve(model: ModelOpt = None, socket: SocketOpt = None, host: HostOpt = None, port: PortOpt = None,
          keep_alive: KeepAliveOpt = 600.0, max_body: MaxBodyOpt = 4 * 1024 * 1024, queue: QueueOpt = 16,
          device: DeviceOpt = None, dtype: DtypeOpt = None, quantize: QuantizeOpt = None,
          no_preload: NoPreloadOpt = False,
          max_request_seconds: MaxRequestSecondsOpt = _FLAGS["max_request_seconds"].default,
          max_steps: MaxStepsOpt = _FLAGS["max_steps"].default, max_tokens: MaxTokensOpt = _FLAGS["max_tokens"].default,
          allow_origin: AllowOriginOpt = None, allow_model: AllowModelOpt = None, fixed_model: FixedModelOpt = False,
          sampler: SamplerOpt = None) -> None:
    from diffgemma.runtime.daemon.lifecycle import DaemonStartError
    from diffgemma.runtime.daemon.lifecycle import serve as run

    config = _config(model, socket, host, port, keep_alive=keep_alive, max_body=max_body, max_queue=queue,
                     device=device, dtype=dtype, quantize=_quantize(quantize), preload=not no_preload,
                     **_limits(max_request_seconds, max_steps, max_tokens, allow_origin, allow_model, fixed_model,
                               sampler))
    try:
        code = run(config)
    except DaemonStartError as exc:
        raise DaemonDown(str(exc)) from None
    raise typer.Exit(code)


@guarded
def start(model: ModelOpt = None, socket: SocketOpt = None, host: HostOpt = None, port: PortOpt = None,
          keep_alive: KeepAliveOpt = 600.0, max_body: MaxBodyOpt = 4 * 1024 * 1024, queue: QueueOpt = 16,
          device: DeviceOpt = None, dtype: DtypeOpt = None, quantize: QuantizeOpt = None,
          no_preload: NoPreloadOpt = False,
          max_request_seconds: MaxRequestSecondsOpt = _FLAGS["max_request_seconds"].default,
          max_steps: MaxStepsOpt = _FLAGS["max_steps"].default, max_tokens: MaxTokensOpt = _FLAGS["max_tokens"].default,
          allow_origin: AllowOriginOpt = None, allow_model: AllowModelOpt = None, fixed_model: FixedModelOpt = False,
          sampler: SamplerOpt = None) -> None:
    from diffgemma.runtime.daemon.lifecycle import DaemonStartError, start_background

    config = _config(model, socket, host, port, keep_alive=keep_alive, max_body=max_body, max_queue=queue,
                     device=device, dtype=dtype, quantize=_quantize(quantize), preload=not no_preload,
                     **_limits(max_request_seconds, max_steps, max_tokens, allow_origin, allow_model, fixed_model,
                               sampler))
    try:
        pid = start_background(config, on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    except DaemonStartError as exc:
        raise DaemonDown(str(exc)) from None
    print(f"daemon running (pid {pid}) on {config.describe()}")


@guarded
def stop(socket: SocketOpt = None, host: HostOpt = None, port: PortOpt = None) -> None:
    from diffgemma.runtime.daemon.lifecycle import DaemonStartError, stop_daemon

    config = _config(None, socket, host, port)
    try:
        pid = stop_daemon(config)
    except DaemonStartError as exc:
        raise DaemonDown(str(exc)) from None
    print(f"daemon (pid {pid}) stopped" if pid else f"no daemon was running on {config.describe()}")


@guarded
def status(socket: SocketOpt = None, host: HostOpt = None, port: PortOpt = None, as_json: JsonOpt = False) -> None:
    from diffgemma.runtime.daemon.lifecycle import daemon_status

    config = _config(None, socket, host, port)
    print_status(daemon_status(config), config.describe(), as_json)


def register(app: typer.Typer) -> None:
    app.command("serve", help=reflow(SERVE_HELP), epilog=reflow(SERVE_EPILOG))(serve)
    daemon = typer.Typer(name="daemon", help=reflow(DAEMON_HELP), epilog=reflow(DAEMON_EPILOG),
                         no_args_is_help=True, rich_markup_mode="rich")
    daemon.command("start", help="Start the daemon in the background and wait until it answers.",
                   epilog=reflow(DAEMON_EPILOG))(start)
    daemon.command("stop", help="Stop the background daemon (SIGTERM, then wait for it to exit).")(stop)
    daemon.command("status", help=STATUS_HELP, epilog=reflow(STATUS_EPILOG))(status)
    app.add_typer(daemon)
    app.command("status", help=STATUS_HELP, epilog=reflow(STATUS_EPILOG))(status)
