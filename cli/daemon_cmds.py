"""`diffgemma serve`, `diffgemma daemon start|stop|status` and `diffgemma status`.

`serve` is the daemon's one command line: it becomes the daemon process (runtime/daemon/lifecycle.py,
imported inside the command only). `daemon start` and the front ends' auto-start run this same
command in the background (runtime/api/autostart.py), so every way of starting a daemon reads the
same flags, DIFFGEMMA_* variables and defaults. Imports that cost anything happen inside the
command functions so `diffgemma --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from diffgemma.cli.errors import CliError, DaemonDown, ModelLoadFailed, UsageProblem, guarded
from diffgemma.cli.options import CaCertOpt, TokenFileOpt, TokenOpt, UrlOpt, int_option
from diffgemma.runtime.api import config
from diffgemma.runtime.api.autostart import (
    address_holder,
    daemon_status,
    is_stopped,
    not_answering,
    start_background,
    stop_daemon,
)
from diffgemma.runtime.api.daemon_config import (
    MODEL_LOAD_FAILED,
    DaemonConfig,
    DaemonStartError,
    write_start_report,
)
from diffgemma.runtime.api.errors import InvalidValue
from diffgemma.runtime.api.remote import refuse_url_socket

SERVE_HELP = """Run the daemon in the foreground: it owns the model and answers infill and edit requests.

By default it listens on a Unix socket in your runtime directory (mode 0600 inside a 0700 \
directory), so only you can reach it. With --port it listens on TCP instead (loopback unless \
--host says otherwise) and every request but /health must carry the bearer token stored in the \
state directory (`Authorization: Bearer <token>`).

Besides its own API (/v1/infill, /v1/edit, /v1/status, ...; schema at /openapi.json) it speaks \
llama.cpp's /infill, /completion, /props and /tokenize (llama.vim, llama.vscode), OpenAI's \
/v1/completions (with a suffix or a FIM template in the prompt), /v1/chat/completions and \
/v1/models (Continue, Tabby, the openai SDK) and Mistral's /v1/fim/completions, so those \
clients work unchanged. Errors are {"error": {"message", "type", "code"}} everywhere.

Every request gets at most --max-request-seconds (then its best draft so far is the answer), \
--max-steps per canvas and --max-tokens. Over TCP, browser origins are refused unless \
--allow-origin names them, and requests may name only the default model, the cached real one \
and those given with --allow-model; --fixed-model forbids loading or unloading by request.

For a team, --tokens-file gives each developer a token of their own (their requests are counted \
under their name in /v1/status and never supersede another developer's) and --tls-cert/--tls-key \
serve HTTPS; developers reach it with `--url https://HOST:PORT` (see the README's Team server).

An idle model is unloaded after --keep-alive seconds and reloaded by the next request. Stop it \
with Ctrl-C or SIGTERM."""

SERVE_EPILOG = """[bold]Examples[/bold]

  diffgemma serve --model google/diffusiongemma-26B-A4B-it
  diffgemma serve --model ./checkpoint --socket /tmp/dg.sock
  diffgemma serve --port 8012                    TCP on 127.0.0.1:8012, token required
  diffgemma serve --keep-alive 0                 unload the model after every request
  diffgemma serve --engine vllm --vllm-url http://gpu1:8000 --model ./checkpoint
  diffgemma serve --host 0.0.0.0 --port 8443 --tokens-file tokens --tls-cert cert.pem --tls-key key.pem
                                                 a team server: HTTPS, one token per developer
  curl --unix-socket "$XDG_RUNTIME_DIR/diffgemma/daemon.sock" http://x/v1/status

[bold]For llama.vim[/bold]: serve with --port 8012, then set g:llama_config.endpoint to \
http://127.0.0.1:8012/infill and api_key to the token file's contents."""

DAEMON_HELP = """Run the daemon in the background and manage it.

[cyan]start[/cyan] launches `diffgemma serve` detached from the terminal (log and pid file in the \
state directory) and waits until it answers; [cyan]stop[/cyan] sends it SIGTERM and waits for a \
clean exit; [cyan]status[/cyan] prints what it reports. The front ends (`diffgemma infill`, the \
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
  diffgemma status --url https://gpu-box:8443 --token-file ~/.config/diffgemma/token

Exits with status 5 when no daemon answers."""

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", envvar=config.ENV_MODEL, show_envvar=True, show_default=False,
    help="Default model: a checkpoint directory or a Hugging Face id in the local cache.")]
SocketOpt = Annotated[Path | None, typer.Option(
    "--socket", envvar=config.ENV_SOCKET, show_envvar=True, show_default=False,
    help="Unix socket path (default: daemon.sock in the user runtime directory).")]
HostOpt = Annotated[str | None, typer.Option(
    "--host", show_default=False, help="With --port: the address to listen on (default 127.0.0.1).")]
# Integers are ASCII digits within range (click's int also takes other scripts' digits).
PortOpt = Annotated[int | None, typer.Option(
    "--port", parser=partial(int_option, 0, 65535), metavar="INTEGER", show_default=False,
    help="Listen on TCP instead of the Unix socket.")]
# The same two flags where a command looks for a running daemon instead of starting one.
DaemonHostOpt = Annotated[str | None, typer.Option(
    "--host", show_default=False, help="With --port: the address of a TCP daemon (default 127.0.0.1).")]
DaemonPortOpt = Annotated[int | None, typer.Option(
    "--port", parser=partial(int_option, 0, 65535), metavar="INTEGER", show_default=False,
    help="The TCP port of the daemon (default: the Unix socket).")]
KeepAliveOpt = Annotated[float, typer.Option(
    "--keep-alive", envvar=config.ENV_KEEP_ALIVE, show_envvar=True,
    help="Seconds an idle model stays loaded; 0 unloads after each request, negative keeps it.")]
MaxBodyOpt = Annotated[int, typer.Option(
    "--max-body", parser=partial(int_option, config.MIN_MAX_BODY, config.MAX_BODY_LIMIT), metavar="INTEGER",
    help="Largest request body, in bytes.")]
QueueOpt = Annotated[int, typer.Option("--queue", parser=partial(int_option, 1, config.MAX_QUEUE_LIMIT),
                                       metavar="INTEGER", help="Most requests waiting at once (503 beyond).")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", envvar=config.ENV_DEVICE, show_envvar=True, show_default=False,
    help="cpu, cuda, cuda:1, ... (default: auto).")]
DtypeOpt = Annotated[str | None, typer.Option(
    "--dtype", show_default=False, help="float32, bfloat16 or float16 (default: auto for the device).")]
QuantizeOpt = Annotated[str | None, typer.Option(
    "--quantize", envvar=config.ENV_QUANTIZE, show_envvar=True, show_default=False,
    help="4bit: quantize an unquantized checkpoint while loading, layer by layer (pre-quantized "
         "checkpoints from `diffgemma quantize` need no flag).")]
NoPreloadOpt = Annotated[bool, typer.Option(
    "--no-preload", help="Load the model on the first request instead of at start.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the daemon's status as one JSON object.")]
MaxRequestSecondsOpt = Annotated[float, typer.Option(
    "--max-request-seconds", min=0, max=config.MAX_REQUEST_SECONDS,
    help="Wall-time limit per request, on every endpoint; at the limit the best draft so far is the answer "
         "(finish reason \"time\"); 0: no limit.")]
MaxStepsOpt = Annotated[int, typer.Option(
    "--max-steps", parser=partial(int_option, 1, config.MAX_STEPS), metavar="INTEGER",
    help="Most denoising steps per canvas any request may ask for (larger requests are capped).")]
MaxTokensOpt = Annotated[int, typer.Option(
    "--max-tokens", parser=partial(int_option, 1, config.MAX_TOKENS_LIMIT), metavar="INTEGER",
    help="Longest answer in tokens (a larger max_tokens / n_predict is capped).")]
AllowOriginOpt = Annotated[list[str] | None, typer.Option(
    "--allow-origin", show_default=False,
    help="TCP: a browser Origin allowed to call the daemon (repeatable; '*' allows any); default: none.")]
AllowModelOpt = Annotated[list[str] | None, typer.Option(
    "--allow-model", show_default=False,
    help="A model requests may name besides the default one and the cached real model (repeatable); "
         "given or over TCP, no other model can be named.")]
FixedModelOpt = Annotated[bool, typer.Option(
    "--fixed-model", help="Serve only the default model: requests cannot load, switch or unload models.")]
SamplerOpt = Annotated[str | None, typer.Option(
    "--sampler", show_default=False, help="The denoising sampler: stream (default) or stock.")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="local: run the model in this process; vllm: send its canvases to the vLLM servers "
                     "given with --vllm-url (--model names the checkpoint they run).")]
VllmUrlOpt = Annotated[list[str] | None, typer.Option(
    "--vllm-url", show_default=False,
    help="With --engine vllm: a vLLM server's URL (repeatable); each client's requests stay on one server, "
         "the next one takes over when it fails.")]
TokensFileOpt = Annotated[Path | None, typer.Option(
    "--tokens-file", envvar=config.ENV_TOKENS_FILE, show_envvar=True, show_default=False,
    help="With --port: developers' tokens, one `NAME TOKEN` per line (mode 0600); each request runs as the "
         "developer whose token it sends. Read again when it changes. The daemon's own token keeps working.")]
TlsCertOpt = Annotated[Path | None, typer.Option(
    "--tls-cert", envvar=config.ENV_TLS_CERT, show_envvar=True, show_default=False,
    help="With --port: serve HTTPS with this PEM certificate (chain); needs --tls-key.")]
TlsKeyOpt = Annotated[Path | None, typer.Option(
    "--tls-key", envvar=config.ENV_TLS_KEY, show_envvar=True, show_default=False,
    help="The PEM private key of --tls-cert.")]
# Written by a daemon started in the background when its start fails (runtime/api/autostart.py).
StartReportOpt = Annotated[Path | None, typer.Option("--start-report", hidden=True)]


def _quantize(value: str | None) -> str | None:
    if value in (None, "", "none"):
        return None
    if value.lower() not in (*config.QUANTIZATIONS, "nf4"):
        raise UsageProblem(f"unknown quantization {value!r} for --quantize; use {' or '.join(config.QUANTIZATIONS)}")
    return "4bit" if value.lower() == "nf4" else value.lower()


def serve_config(model: str | None = None, socket: Path | None = None, host: str | None = None,
                 port: int | None = None, keep_alive: float = config.DEFAULT_KEEP_ALIVE_S,
                 max_body: int = config.DEFAULT_MAX_BODY, queue: int = config.DEFAULT_MAX_QUEUE,
                 device: str | None = None, dtype: str | None = None, quantize: str | None = None,
                 no_preload: bool = False, max_request_seconds: float = config.DEFAULT_MAX_REQUEST_SECONDS,
                 max_steps: int = config.DEFAULT_MAX_STEPS, max_tokens: int = config.DEFAULT_MAX_TOKENS,
                 allow_origin: list[str] | None = None, allow_model: list[str] | None = None,
                 fixed_model: bool = False, sampler: str | None = None, *, engine: str = "local",
                 vllm_url: list[str] | None = None, tokens_file: Path | None = None,
                 tls_cert: Path | None = None, tls_key: Path | None = None) -> DaemonConfig:
    """The daemon configuration `serve` and `daemon start` build from their options (same names)."""

    try:
        refuse_url_socket(socket, advice="to listen on TCP use --host and --port")
    except InvalidValue as exc:
        raise UsageProblem(str(exc)) from None
    if socket is not None and port is not None:
        raise UsageProblem("use either --socket or --port, not both")
    if host is not None and port is None:
        raise UsageProblem("--host needs --port")
    if sampler is not None and sampler not in config.SAMPLERS:
        raise UsageProblem(f"unknown sampler {sampler!r} for --sampler; use {' or '.join(config.SAMPLERS)}")
    return DaemonConfig(model=model, socket=socket, host=host, port=port, keep_alive=keep_alive, max_body=max_body,
                        max_queue=queue, device=device, dtype=dtype, quantize=_quantize(quantize),
                        preload=not no_preload, max_request_seconds=max_request_seconds, max_steps=max_steps,
                        max_tokens=max_tokens, allow_origins=tuple(allow_origin or ()),
                        allow_models=tuple(allow_model or ()), fixed_model=fixed_model, sampler=sampler,
                        engine=engine, vllm_urls=tuple(vllm_url or ()),
                        tokens_file=tokens_file, tls_cert=tls_cert, tls_key=tls_key)


def _human_bytes(n: int | None) -> str:
    if not n:
        return "0 B"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _memory(status: dict[str, Any]) -> str:
    """The daemon's resident memory, and how much of it the model's weights are."""
    weights = status.get("memory_bytes")
    rss = status.get("rss_bytes")
    if not isinstance(rss, int):  # an older daemon: only the weights
        return f"{_human_bytes(weights)} (model weights)"
    return f"{_human_bytes(rss)} resident" + (f" (model weights {_human_bytes(weights)})" if weights else "")


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
        ("memory", _memory(status)),
        ("queue", f"{status.get('queue_length', 0)} waiting of {status.get('queue_limit', '?')}"
                  + (f", running {status['running']}" if status.get("running") else "")),
        ("requests", f"{status.get('requests_served', 0)} served, {status.get('cancelled', 0)} cancelled, "
                     f"{status.get('errors', 0)} failed, {status.get('rejected', 0)} rejected"),
        ("cache hits", str(status.get("cache_hits", 0))),
        ("mean latency", f"{latency:.0f} ms" if isinstance(latency, int | float) else "-"),
        ("keep alive", (f"{keep:g} s" if isinstance(keep, int | float) else "-")
                       + (f", unloads in {unload:.0f} s" if isinstance(unload, int | float) else "")),
    ]
    servers = status.get("servers")
    if isinstance(servers, list):  # --engine vllm: where the canvases go, and how each server is doing
        for server in servers:
            health = "healthy" if server.get("healthy") else f"down ({server.get('last_error') or 'failing'})"
            rows.append(("vllm", f"{server.get('url')} serving {server.get('model')}: {health}, "
                                 f"{server.get('requests', 0)} requests, {server.get('aborted', 0)} aborted"))
    if status.get("notice"):
        rows.append(("note", str(status["notice"])))
    return rows + _developer_rows(status)


def _developer_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    """A team server's developers (all of them for its owner, oneself for a developer)."""
    developers = status.get("developers")
    if not isinstance(developers, dict):
        return []
    me = status.get("developer")
    rows = [("you are", str(me))] if me else [("developers", str(len(developers)))]
    for name, usage in developers.items():
        if isinstance(usage, dict):
            counts = {key: usage.get(key, 0) for key in ("requests", "completed", "superseded", "cancelled", "errors",
                                                         "generated_tokens")}
            line = ("{requests} requests: {completed} completed, {superseded} superseded, {cancelled} cancelled, "
                    "{errors} failed; {generated_tokens} tokens").format(**counts)
            rows.append((f"  {name}", f"{line}; last seen {usage.get('last_seen') or 'never'}"))
    return rows


def _silent(daemon: DaemonConfig) -> dict[str, Any]:
    """What `status` says when no daemon answers: nothing runs there, or a process holds the
    address without answering (stopped, or stuck)."""
    pid = address_holder(daemon)
    if pid is None:
        return {"running": False, "address": daemon.describe()}
    return {"running": True, "answering": False, "pid": pid, "stopped": is_stopped(pid),
            "address": daemon.describe(), "message": str(not_answering(pid, daemon))}


def print_status(status: dict[str, Any] | None, silent: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(status if status is not None else silent, indent=2))
    elif status is None:
        # Not an answer but an error: stdout stays clean for pipes.
        if silent.get("running"):
            print(silent["message"], file=sys.stderr)
        else:
            print(f"daemon: not running (nothing answers on {silent['address']})", file=sys.stderr)
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


def start_failure(exc: DaemonStartError) -> CliError:
    """Why a daemon did not start, with its exit code: the model's (6) or the daemon's (5)."""
    if exc.code == MODEL_LOAD_FAILED:
        return ModelLoadFailed(str(exc))
    return DaemonDown(str(exc))


@guarded
def serve(model: ModelOpt = None, socket: SocketOpt = None, host: HostOpt = None, port: PortOpt = None,
          keep_alive: KeepAliveOpt = config.DEFAULT_KEEP_ALIVE_S, max_body: MaxBodyOpt = config.DEFAULT_MAX_BODY,
          queue: QueueOpt = config.DEFAULT_MAX_QUEUE, device: DeviceOpt = None, dtype: DtypeOpt = None,
          quantize: QuantizeOpt = None, no_preload: NoPreloadOpt = False,
          max_request_seconds: MaxRequestSecondsOpt = config.DEFAULT_MAX_REQUEST_SECONDS,
          max_steps: MaxStepsOpt = config.DEFAULT_MAX_STEPS, max_tokens: MaxTokensOpt = config.DEFAULT_MAX_TOKENS,
          allow_origin: AllowOriginOpt = None, allow_model: AllowModelOpt = None, fixed_model: FixedModelOpt = False,
          sampler: SamplerOpt = None, engine: EngineOpt = "local", vllm_url: VllmUrlOpt = None,
          tokens_file: TokensFileOpt = None, tls_cert: TlsCertOpt = None, tls_key: TlsKeyOpt = None,
          start_report: StartReportOpt = None) -> None:

    try:
        daemon = serve_config(model, socket, host, port, keep_alive, max_body, queue, device, dtype, quantize,
                              no_preload, max_request_seconds, max_steps, max_tokens, allow_origin, allow_model,
                              fixed_model, sampler, engine=engine, vllm_url=vllm_url, tokens_file=tokens_file,
                              tls_cert=tls_cert, tls_key=tls_key)
    except CliError as exc:
        if start_report is not None:
            write_start_report(start_report, DaemonStartError(str(exc)))
        raise
    from diffgemma.runtime.daemon.lifecycle import serve as run  # this process becomes the daemon

    try:
        code = run(daemon)
    except DaemonStartError as exc:
        if start_report is not None:
            write_start_report(start_report, exc)
        raise start_failure(exc) from None
    raise typer.Exit(code)


@guarded
def start(model: ModelOpt = None, socket: SocketOpt = None, host: HostOpt = None, port: PortOpt = None,
          keep_alive: KeepAliveOpt = config.DEFAULT_KEEP_ALIVE_S, max_body: MaxBodyOpt = config.DEFAULT_MAX_BODY,
          queue: QueueOpt = config.DEFAULT_MAX_QUEUE, device: DeviceOpt = None, dtype: DtypeOpt = None,
          quantize: QuantizeOpt = None, no_preload: NoPreloadOpt = False,
          max_request_seconds: MaxRequestSecondsOpt = config.DEFAULT_MAX_REQUEST_SECONDS,
          max_steps: MaxStepsOpt = config.DEFAULT_MAX_STEPS, max_tokens: MaxTokensOpt = config.DEFAULT_MAX_TOKENS,
          allow_origin: AllowOriginOpt = None, allow_model: AllowModelOpt = None, fixed_model: FixedModelOpt = False,
          sampler: SamplerOpt = None, engine: EngineOpt = "local", vllm_url: VllmUrlOpt = None,
          tokens_file: TokensFileOpt = None, tls_cert: TlsCertOpt = None, tls_key: TlsKeyOpt = None) -> None:

    daemon = serve_config(model, socket, host, port, keep_alive, max_body, queue, device, dtype, quantize,
                          no_preload, max_request_seconds, max_steps, max_tokens, allow_origin, allow_model,
                          fixed_model, sampler, engine=engine, vllm_url=vllm_url, tokens_file=tokens_file,
                          tls_cert=tls_cert, tls_key=tls_key)
    try:
        pid = start_background(daemon, on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    except DaemonStartError as exc:
        raise start_failure(exc) from None
    print(f"daemon running (pid {pid}) on {daemon.describe()}")


@guarded
def stop(socket: SocketOpt = None, host: DaemonHostOpt = None, port: DaemonPortOpt = None) -> None:

    daemon = serve_config(None, socket, host, port)
    try:
        pid = stop_daemon(daemon)
    except DaemonStartError as exc:
        raise DaemonDown(str(exc)) from None
    print(f"daemon (pid {pid}) stopped" if pid else f"no daemon was running on {daemon.describe()}")


@guarded
def status(socket: SocketOpt = None, host: DaemonHostOpt = None, port: DaemonPortOpt = None, url: UrlOpt = None,
           token: TokenOpt = None, token_file: TokenFileOpt = None, ca_cert: CaCertOpt = None,
           as_json: JsonOpt = False) -> None:

    try:
        refuse_url_socket(socket)  # status asks a daemon: a URL goes to --url
    except InvalidValue as exc:
        raise UsageProblem(str(exc)) from None
    daemon = serve_config(None, socket, host, port)
    if url is None and socket is None and port is None:  # config.toml may name a team server
        url, token_file, ca_cert = _configured_remote(token_file, ca_cert)
    if url is None:
        answer = daemon_status(daemon)
        print_status(answer, _silent(daemon) if answer is None else {}, as_json)
        return
    if socket is not None or port is not None:
        raise UsageProblem("use either --url or --socket/--port, not both")
    from diffgemma.runtime.api.client import Client
    from diffgemma.runtime.api.remote import Remote

    try:
        remote = Remote.resolve(url, token, token_file, ca_cert)
    except InvalidValue as exc:
        raise UsageProblem(str(exc)) from None
    # A daemon elsewhere that does not answer is an error with its reason (a refused certificate,
    # say), not just "not running".
    with Client(base_url=remote.url, token=remote.token, verify=remote.verify(), timeout=30.0) as client:
        print_status(client.status(), {"running": False, "address": remote.url}, as_json)


def _configured_remote(token_file: str | None, ca_cert: str | None) -> tuple[str | None, str | None, str | None]:
    """url, token_file and ca_cert from config.toml where the flags and variables left them unset."""
    try:
        from_file = config.load_config()
    except config.ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    return from_file.get("url"), token_file or from_file.get("token_file"), ca_cert or from_file.get("ca_cert")


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command("serve", help=SERVE_HELP, epilog=SERVE_EPILOG)(serve)
commands.command("status", help=STATUS_HELP, epilog=STATUS_EPILOG)(status)
daemon_group = typer.Typer(name="daemon", help=DAEMON_HELP, epilog=DAEMON_EPILOG, no_args_is_help=True,
                           rich_markup_mode="rich")
daemon_group.command("start", help="Start the daemon in the background and wait until it answers.",
                     epilog=DAEMON_EPILOG)(start)
daemon_group.command("stop", help="Stop the background daemon (SIGTERM, then wait for it to exit).")(stop)
daemon_group.command("status", help=STATUS_HELP, epilog=STATUS_EPILOG)(status)
commands.add_typer(daemon_group)
