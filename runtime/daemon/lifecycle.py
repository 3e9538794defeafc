"""Run and manage the diffgemma daemon: foreground serve, background start/stop/status.

    python -m diffgemma.runtime.daemon serve --model PATH [--socket PATH | --host H --port N]
    python -m diffgemma.runtime.daemon start|stop|status [--socket PATH]

The daemon binds its Unix socket itself (0600, inside a 0700 directory), holds an exclusive lock
beside it so two daemons never serve one socket, replaces a stale socket left by a crashed daemon,
writes a pid file and (in the background) a log file under the state directory, and shuts down
cleanly on SIGTERM. TCP is opt-in and needs the bearer token stored (0600) in the state directory.

This module is imported by the clients (``ensure_daemon``) so it stays light: uvicorn, the server
and the scheduler are imported inside ``serve`` only, and torch only in the engine worker.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import secrets
import signal
import socket as socketlib
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from diffgemma.runtime.api import paths

DEFAULT_KEEP_ALIVE_S = 600.0
DEFAULT_MAX_QUEUE = 16
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # same as server.DEFAULT_MAX_BODY (not imported: keeps this light)
AF_UNIX_PATH_MAX = 107

log = logging.getLogger("diffgemma.daemon")


ADDRESS_TAKEN = "address_taken"  # another daemon holds the address: a lost start race, not a failure
START_FAILED = "start_failed"


class DaemonStartError(RuntimeError):
    """The daemon cannot start (address in use, another daemon, bad option); one line.

    ``code`` says why in a form other code may act on (the message is for people only).
    """

    def __init__(self, message: str, code: str = START_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Flag:
    """One `serve`/`start` option, defined once for both command lines (argparse here, Typer in
    cli/daemon_cmds.py), so a daemon started in the background accepts what `diffgemma serve` does."""

    name: str
    dest: str
    kind: type
    default: Any
    help: str
    multiple: bool = False
    choices: tuple[str, ...] | None = None


DEFAULT_MAX_REQUEST_SECONDS = 30.0  # same as scheduler.DEFAULT_MAX_REQUEST_SECONDS (kept light)
DEFAULT_MAX_STEPS = 256
DEFAULT_MAX_TOKENS = 1024

LIMIT_FLAGS: tuple[Flag, ...] = (
    Flag("--max-request-seconds", "max_request_seconds", float, DEFAULT_MAX_REQUEST_SECONDS,
         "wall-time limit per request, on every endpoint; at the limit the best draft so far is the answer "
         "(finish reason \"time\"); 0: no limit"),
    Flag("--max-steps", "max_steps", int, DEFAULT_MAX_STEPS,
         "most denoising steps per canvas any request may ask for (larger requests are capped)"),
    Flag("--max-tokens", "max_tokens", int, DEFAULT_MAX_TOKENS,
         "longest answer in tokens (a larger max_tokens / n_predict is capped)"),
    Flag("--allow-origin", "allow_origins", str, (),
         "TCP: a browser Origin allowed to call the daemon (repeatable; '*' allows any); default: none", multiple=True),
    Flag("--allow-model", "allow_models", str, (),
         "a model requests may name besides the default one and the cached real model (repeatable); "
         "given or over TCP, no other model can be named", multiple=True),
    Flag("--fixed-model", "fixed_model", bool, False,
         "serve only the default model: requests cannot load, switch or unload models"),
    Flag("--sampler", "sampler", str, None, "the denoising sampler: stream (default) or stock",
         choices=("stream", "stock")),
)


def resolve_default_model(requested: str | None) -> tuple[str | None, str | None]:
    """The model the daemon serves when a request names none, and a notice for the user.

    ``--model``, else $DIFFGEMMA_MODEL, else the real DiffusionGemma when it is in the local
    cache and a CUDA GPU is present, else the embedded diffgemma-mini (with a one-line notice
    naming the real model and how to get it).
    """
    from diffgemma.runtime.engine.mini import default_model

    return default_model(requested or os.environ.get("DIFFGEMMA_MODEL") or None)


@dataclass
class DaemonConfig:
    model: str | None = None
    socket: Path | None = None  # None with host/port unset: the default socket
    host: str | None = None
    port: int | None = None
    keep_alive: float = DEFAULT_KEEP_ALIVE_S
    max_body: int = DEFAULT_MAX_BODY
    max_queue: int = DEFAULT_MAX_QUEUE
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None  # "4bit": quantize an unquantized checkpoint while loading
    preload: bool = True  # load the default model at start instead of on the first request
    max_request_seconds: float = DEFAULT_MAX_REQUEST_SECONDS
    max_steps: int = DEFAULT_MAX_STEPS
    max_tokens: int = DEFAULT_MAX_TOKENS
    allow_origins: tuple[str, ...] = ()
    allow_models: tuple[str, ...] = ()
    fixed_model: bool = False
    sampler: str | None = None  # None: the engine's default (stream)

    @property
    def tcp(self) -> bool:
        return self.port is not None

    def socket_path(self) -> Path:
        return Path(self.socket).expanduser() if self.socket else paths.default_socket_path()

    @property
    def address(self) -> Path | str:
        if self.tcp:
            return paths.tcp_address(self.host or "127.0.0.1", int(self.port or 0))
        return self.socket_path()

    def describe(self) -> str:
        return f"http://{self.host or '127.0.0.1'}:{self.port}" if self.tcp else str(self.socket_path())

    def argv(self) -> list[str]:
        """The `serve` arguments that reproduce this configuration (for background starts)."""
        args = ["--max-body", str(self.max_body), "--queue", str(self.max_queue)]
        if self.keep_alive != DEFAULT_KEEP_ALIVE_S:
            # Left out at the default so the started daemon still honours DIFFGEMMA_KEEP_ALIVE.
            args += ["--keep-alive", repr(self.keep_alive)]
        if self.tcp:
            args += ["--host", self.host or "127.0.0.1", "--port", str(self.port)]
        else:
            args += ["--socket", str(self.socket_path())]
        for flag, value in (("--model", self.model), ("--device", self.device), ("--dtype", self.dtype),
                            ("--quantize", self.quantize)):
            if value:
                args += [flag, value]
        if not self.preload:
            args.append("--no-preload")
        for flag in LIMIT_FLAGS:
            value = getattr(self, flag.dest)
            if flag.multiple:
                for item in value:
                    args += [flag.name, item]
            elif flag.kind is bool:
                if value:
                    args.append(flag.name)
            elif value is not None and value != flag.default:
                args += [flag.name, repr(value) if isinstance(value, float) else str(value)]
        return args

    def check(self) -> None:
        """Refuse settings no daemon can run with (one line each, before anything is bound)."""
        if self.max_queue < 1:
            raise DaemonStartError("--queue must be at least 1")
        if self.max_body < 1024:
            raise DaemonStartError("--max-body must be at least 1024 bytes")
        if not (self.max_request_seconds >= 0 and self.max_request_seconds <= 24 * 3600):
            raise DaemonStartError("--max-request-seconds must be between 0 (no limit) and 86400")
        if not 1 <= self.max_steps <= 1024:
            raise DaemonStartError("--max-steps must be between 1 and 1024")
        if not 1 <= self.max_tokens <= 8192:
            raise DaemonStartError("--max-tokens must be between 1 and 8192")
        if self.sampler not in (None, "stream", "stock"):
            raise DaemonStartError(f"unknown --sampler {self.sampler!r}; use stream or stock")


# --- token ----------------------------------------------------------------------------------------


def load_or_create_token() -> str:
    """The bearer token for TCP: $DIFFGEMMA_TOKEN, else the 0600 token file (created on first use)."""
    env = os.environ.get("DIFFGEMMA_TOKEN")
    if env:
        return env
    path = paths.token_path()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if (path.stat().st_mode & 0o077) != 0:
            os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


# --- sockets, locks, stale files ------------------------------------------------------------------


def socket_answers(path: Path) -> bool:
    """True when something accepts connections on the Unix socket ``path`` (a live daemon)."""
    probe = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class AddressLock:
    """An exclusive flock held for the daemon's lifetime; the file also names the holder's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self, what: str) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            holder = _read_pid(self.path)
            who = f" (pid {holder})" if holder else ""
            raise DaemonStartError(f"another diffgemma daemon{who} is already serving {what}", ADDRESS_TAKEN) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._handle.close()
            self._handle = None


def bind_unix_socket(path: Path, lock: AddressLock) -> socketlib.socket:
    """Bind ``path`` with mode 0600 in a 0700 directory; refuse a live daemon, replace a stale socket."""
    if len(os.fsencode(path)) > AF_UNIX_PATH_MAX:
        raise DaemonStartError(f"socket path {path} is {len(os.fsencode(path))} bytes; Unix sockets allow "
                               f"at most {AF_UNIX_PATH_MAX}: choose a shorter --socket")
    parent = path.parent
    # Every refusal comes before any warning: a start that fails says one thing, its error.
    if path.exists() and socket_answers(path):
        raise DaemonStartError(f"a diffgemma daemon is already answering on {path}; "
                               f"stop it with `diffgemma daemon stop` first", ADDRESS_TAKEN)
    if (path.exists() or path.is_symlink()) and not stat.S_ISSOCK(path.lstat().st_mode):
        raise DaemonStartError(f"{path} exists and is not a socket; choose another --socket")
    lock.acquire(str(path))
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700)
        os.chmod(parent, 0o700)
    elif parent.stat().st_mode & 0o077:
        log.warning("the socket's directory %s is open to other users; the socket itself is 0600", parent)
    if path.exists() or path.is_symlink():
        # Nothing answers and we hold the lock: a crashed daemon's leftover.
        log.warning("replacing stale socket %s", path)
        path.unlink()
    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket exists with looser permissions
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise DaemonStartError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def bind_tcp_socket(host: str, port: int, lock: AddressLock) -> socketlib.socket:
    lock.acquire(f"{host}:{port}")
    family = socketlib.AF_INET6 if ":" in host else socketlib.AF_INET
    sock = socketlib.socket(family, socketlib.SOCK_STREAM)
    sock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DaemonStartError(f"{host}:{port} is already in use; choose another --port") from None
        raise DaemonStartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


# --- foreground serve -------------------------------------------------------------------------------


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("diffgemma")
    if not logger.handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def serve(config: DaemonConfig) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT. Returns the exit status."""
    _setup_logging()
    import uvicorn

    from diffgemma.runtime.daemon.scheduler import Limits, Scheduler
    from diffgemma.runtime.daemon.server import ServerInfo, create_app

    config.check()
    host = config.host or "127.0.0.1"
    lock = AddressLock(paths.lock_path(config.address))
    token = None
    if config.tcp:
        if host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("listening on %s: reachable from other machines (the bearer token still applies)", host)
        token = load_or_create_token()
        sock = bind_tcp_socket(host, int(config.port or 0), lock)
        info = ServerInfo(url=config.describe(), max_body=config.max_body, token=token, host=host,
                          allow_origins=tuple(config.allow_origins))
    else:
        sock_path = config.socket_path()
        sock = bind_unix_socket(sock_path, lock)
        info = ServerInfo(socket=str(sock_path), max_body=config.max_body)

    pid_file = paths.pid_path(config.address)
    default_model, notice = resolve_default_model(config.model)
    info.notice = notice
    if notice:
        log.warning("%s", notice)
    limits = Limits(max_request_seconds=config.max_request_seconds or None, max_steps=config.max_steps,
                    max_tokens=config.max_tokens, allowed_models=tuple(config.allow_models),
                    # Over TCP any token holder could otherwise load any path: only what the operator named.
                    restrict_models=config.tcp or bool(config.allow_models), fixed_model=config.fixed_model)
    scheduler = Scheduler(default_model, device=config.device, dtype=config.dtype, quantize=config.quantize,
                          keep_alive=config.keep_alive, max_queue=config.max_queue, sampler=config.sampler,
                          limits=limits)
    scheduler.start()
    if config.preload and default_model:
        scheduler.preload()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Stop the engine at its next step, so shutdown does not wait for a long generation.
            scheduler.cancel_all()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the caught SIGTERM once it has stopped, which would kill us before
            # the cleanup below (socket, pid file, lock, model). A signal-stopped daemon has shut
            # down cleanly: forget the signal and exit 0.
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    uv_config = uvicorn.Config(create_app(scheduler, info), log_level="warning", access_log=False,
                               lifespan="off", timeout_graceful_shutdown=5, server_header=False)
    server = Server(uv_config)
    try:
        pid_file.write_text(f"{os.getpid()}\n")
        log.info("diffgemma daemon (pid %d) listening on %s; model: %s", os.getpid(), config.describe(),
                 default_model or "none (requests must name one)")
        if token:
            log.info("TCP clients must send `Authorization: Bearer <token>`; the token is in %s",
                     paths.token_path())
        server.run(sockets=[sock])
    finally:
        scheduler.stop()
        if not config.tcp:
            with contextlib.suppress(OSError):
                config.socket_path().unlink()
        with contextlib.suppress(OSError):
            if _read_pid(pid_file) == os.getpid():
                pid_file.unlink()
        sock.close()
        lock.release()
        log.info("daemon stopped")
    return 0


# --- background start / stop / status --------------------------------------------------------------


def spawn_background(config: DaemonConfig | None = None, *, socket: Path | None = None,
                     model: str | None = None) -> subprocess.Popen[bytes]:
    """Start `serve` detached from this terminal, logging to the state directory."""
    if config is None:
        config = DaemonConfig(model=model, socket=socket)
    log_file = paths.log_path(config.address)
    try:
        out = open(log_file, "ab")  # noqa: SIM115 - handed to the child
    except OSError as exc:
        raise DaemonStartError(f"cannot write the daemon log {log_file}: {exc.strerror}") from None
    with out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting daemon\n".encode())
        out.flush()
        command = [sys.executable, "-m", "diffgemma.runtime.daemon", "serve", *config.argv()]
        try:
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise DaemonStartError(f"cannot start the daemon: {exc.strerror}") from None


class LogError(str):
    """A failed start's message as the log recorded it, with its DaemonStartError code."""

    code: str = START_FAILED


def _log_error(message: str, code: str) -> LogError:
    error = LogError(message)
    error.code = code
    return error


def last_log_error(log_file: Path) -> LogError | None:
    """The last ``error:`` line of a daemon log (what a failed start said), if any, with its code
    (``error[code]: message``, as `main` writes it)."""
    try:
        with open(log_file, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error: "):
            return _log_error(line.removeprefix("error: "), START_FAILED)
        if line.startswith("error[") and "]: " in line:
            code, _, message = line.removeprefix("error[").partition("]: ")
            return _log_error(message, code)
    return None


def lost_start_race(reason: str | None) -> bool:
    """True when a start failed only because another daemon took the address first (then use it).
    Decided on the error's code, never on its wording."""
    return getattr(reason, "code", None) == ADDRESS_TAKEN


def _client_for(config: DaemonConfig, timeout: float = 10.0) -> Any:
    from diffgemma.runtime.api.client import Client

    if config.tcp:
        return Client(base_url=config.describe(), timeout=timeout)
    return Client(socket=config.socket_path(), timeout=timeout)


def start_background(config: DaemonConfig, on_progress: Callable[[str], None] | None = None,
                     timeout: float = 300.0) -> int:
    """Start a background daemon (unless one answers) and wait until it is healthy; returns its pid."""
    say = on_progress or (lambda _line: None)
    with _client_for(config) as client:
        if client.health():
            return int(client.status().get("pid") or 0)
        say(f"starting daemon on {config.describe()}…")
        process = spawn_background(config)
        deadline = time.monotonic() + timeout
        while not client.health():
            code = process.poll()
            if code is not None and not client.health():
                reason = last_log_error(paths.log_path(config.address))
                if not lost_start_race(reason):
                    raise DaemonStartError(f"the daemon did not start: {reason or f'it exited with status {code}'}")
            if time.monotonic() > deadline:
                raise DaemonStartError(f"the daemon did not answer within {timeout:g} s; "
                                       f"see {paths.log_path(config.address)}")
            time.sleep(0.05)
        last = ""
        while True:  # report a model load in progress, as `ensure_daemon` does
            status = client.status()
            if status.get("state") != "loading" or time.monotonic() > deadline:
                break
            line = f"loading model {status.get('loading_model')}…"
            if line != last:
                say(line)
                last = line
            time.sleep(0.1)
        return int(client.status().get("pid") or process.pid)  # ours, or the one that won a start race


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_daemon_process(pid: int) -> bool:
    """Guard against a recycled pid: the process must be a diffgemma daemon (Linux /proc check)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return b"diffgemma" in cmdline


def find_pid(config: DaemonConfig) -> int | None:
    """The running daemon's pid: asked over the socket, else read from the pid file."""
    with _client_for(config, timeout=5.0) as client:
        if client.health():
            with contextlib.suppress(Exception):
                pid = int(client.status().get("pid") or 0)
                if pid:
                    return pid
    pid = _read_pid(paths.pid_path(config.address))
    if pid and _alive(pid) and _is_daemon_process(pid):
        return pid
    return None


def stop_daemon(config: DaemonConfig, timeout: float = 15.0) -> int | None:
    """SIGTERM the daemon and wait for it to exit; returns its pid, or None when none was running."""
    pid = find_pid(config)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise DaemonStartError(f"the daemon (pid {pid}) did not exit within {timeout:g} s of SIGTERM")
        time.sleep(0.05)
    return pid


def daemon_status(config: DaemonConfig) -> dict[str, Any] | None:
    """The daemon's /v1/status, or None when no daemon answers."""
    from diffgemma.runtime.api.client import DaemonError

    with _client_for(config) as client:
        try:
            return client.status()
        except DaemonError:
            return None


# --- python -m diffgemma.runtime.daemon -------------------------------------------------------------


def _add_address_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, help="Unix socket path (default: the user runtime dir)")
    parser.add_argument("--host", help="serve TCP on this host instead (default 127.0.0.1 with --port)")
    parser.add_argument("--port", type=int, help="serve TCP on this port (needs the bearer token)")


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    for flag in LIMIT_FLAGS:
        if flag.kind is bool:
            parser.add_argument(flag.name, dest=flag.dest, action="store_true", help=flag.help)
        elif flag.multiple:
            parser.add_argument(flag.name, dest=flag.dest, action="append", default=[], type=flag.kind,
                                help=flag.help)
        else:
            parser.add_argument(flag.name, dest=flag.dest, type=flag.kind, default=flag.default,
                                choices=flag.choices, help=flag.help)


def _config_from_args(args: argparse.Namespace) -> DaemonConfig:
    if args.socket and (args.host or args.port is not None):
        raise DaemonStartError("use either --socket or --host/--port, not both")
    if args.host and args.port is None:
        raise DaemonStartError("--host needs --port")
    return DaemonConfig(
        model=getattr(args, "model", None), socket=args.socket, host=args.host, port=args.port,
        keep_alive=getattr(args, "keep_alive", DEFAULT_KEEP_ALIVE_S),
        max_body=getattr(args, "max_body", DEFAULT_MAX_BODY), max_queue=getattr(args, "queue", DEFAULT_MAX_QUEUE),
        device=getattr(args, "device", None), dtype=getattr(args, "dtype", None),
        quantize=getattr(args, "quantize", None),
        preload=not getattr(args, "no_preload", False),
        **{f.dest: (tuple(getattr(args, f.dest)) if f.multiple else getattr(args, f.dest))
           for f in LIMIT_FLAGS if hasattr(args, f.dest)},
    )


def _env_keep_alive() -> float:
    """$DIFFGEMMA_KEEP_ALIVE, as `diffgemma serve` reads it, for daemons started in the background."""
    try:
        return float(os.environ.get("DIFFGEMMA_KEEP_ALIVE", DEFAULT_KEEP_ALIVE_S))
    except ValueError:
        return DEFAULT_KEEP_ALIVE_S


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffgemma.runtime.daemon",
                                     description="Run or manage the diffgemma daemon.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run in the foreground")
    start_p = sub.add_parser("start", help="run in the background")
    for p in (serve_p, start_p):
        p.add_argument("--model", help="default model (path or Hugging Face id)")
        _add_address_args(p)
        p.add_argument("--keep-alive", type=float, default=_env_keep_alive(),
                       help="seconds an idle model stays loaded (0: unload after each request, <0: forever)")
        p.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help="largest request body in bytes")
        p.add_argument("--queue", type=int, default=DEFAULT_MAX_QUEUE, help="most requests waiting at once")
        p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: auto)")
        p.add_argument("--dtype", help="float32, bfloat16, float16 (default: auto)")
        p.add_argument("--quantize", choices=["4bit"], help="quantize an unquantized checkpoint to 4-bit while loading")
        p.add_argument("--no-preload", action="store_true", help="load the model on the first request")
        add_limit_args(p)
    for name in ("stop", "status"):
        _add_address_args(sub.add_parser(name, help=f"{name} the background daemon"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _config_from_args(args)
        if args.command == "serve":
            return serve(config)
        if args.command == "start":
            pid = start_background(config, on_progress=lambda line: print(line, file=sys.stderr))
            print(f"daemon running (pid {pid}) on {config.describe()}")
            return 0
        if args.command == "stop":
            pid = stop_daemon(config)
            print(f"daemon (pid {pid}) stopped" if pid else "no daemon was running")
            return 0
        status = daemon_status(config)
        if status is None:
            print(f"no daemon answers on {config.describe()}", file=sys.stderr)
            return 1
        import json

        print(json.dumps(status, indent=2))
        return 0
    except DaemonStartError as exc:
        # The code travels in the log line, so a client that started us can tell a lost start
        # race from a failure without reading the message.
        tag = "error" if exc.code == START_FAILED else f"error[{exc.code}]"
        print(f"{tag}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
