"""The serving process: bind the daemon's address, hold its lock, run the HTTP server, shut down cleanly.

`diffgemma serve` (cli/daemon_cmds.py) becomes this process: it resolves its flags into a
``DaemonConfig`` and calls ``serve``. Front ends start it in the background with that same
command (runtime/api/autostart.py); nothing here is imported by them.

The daemon binds its Unix socket itself (0600, inside a 0700 directory), holds an exclusive lock
beside it so two daemons never serve one socket, replaces a stale socket left by a crashed daemon,
writes a pid file under the state directory, and shuts down cleanly on SIGTERM. TCP is opt-in and
needs the bearer token stored (0600) in the state directory.

uvicorn, the server and the scheduler are imported inside ``serve`` only, and torch only in the
engine worker.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket as socketlib
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from diffgemma.runtime.api import paths
from diffgemma.runtime.api.config import ENV_MODEL, VLLM_WORKERS, env
from diffgemma.runtime.api.daemon_config import ADDRESS_TAKEN, MODEL_LOAD_FAILED, DaemonConfig, DaemonStartError
from diffgemma.runtime.api.errors import one_line
from diffgemma.runtime.api.token_file import load_or_create_token
from diffgemma.runtime.daemon.team import load_team

if TYPE_CHECKING:
    from diffgemma.runtime.daemon.scheduler import Scheduler
    from diffgemma.runtime.daemon.server import ServerInfo
    from diffgemma.runtime.engine.vllm.engine import VllmEngine

AF_UNIX_PATH_MAX = 107

log = logging.getLogger("diffgemma.daemon")


def resolve_default_model(requested: str | None) -> tuple[str | None, str | None]:
    """The model the daemon serves when a request names none, and a notice for the user.

    ``--model`` (or $DIFFGEMMA_MODEL, which the flag reads), else the real DiffusionGemma when it
    is in the local cache and a CUDA GPU is present, else the embedded diffgemma-mini (with a
    one-line notice naming the real model and how to get it).
    """
    from diffgemma.runtime.engine.mini import default_model

    return default_model(requested or env(ENV_MODEL))


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
            holder = paths.read_pid(self.path)
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
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets
    # that say they are TCP, and the connections accepted here inherit it. Without it every answer
    # after the first on a kept-alive connection waited ~40 ms for the client's delayed ACK.
    sock = socketlib.socket(family, socketlib.SOCK_STREAM, socketlib.IPPROTO_TCP)
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


def _bind(config: DaemonConfig, lock: AddressLock) -> tuple[socketlib.socket, ServerInfo]:
    """The listening socket for the configured address, and what /v1/status says about it."""
    from diffgemma.runtime.daemon.server import ServerInfo

    if not config.tcp:
        sock_path = config.socket_path()
        return bind_unix_socket(sock_path, lock), ServerInfo(socket=str(sock_path), max_body=config.max_body)
    host = config.host or "127.0.0.1"
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: reachable from other machines (the bearer token still applies)", host)
        if not config.tls:
            log.warning("without --tls-cert, tokens and code cross the network in clear text")
    token = load_or_create_token()
    team = load_team(config.tokens_file)
    if config.tls_cert is not None and config.tls_key is not None:
        check_tls(config.tls_cert, config.tls_key)
    sock = bind_tcp_socket(host, int(config.port or 0), lock)
    return sock, ServerInfo(url=config.describe(), max_body=config.max_body, token=token, host=host,
                            allow_origins=tuple(config.allow_origins), team=team, tls=config.tls)


def check_tls(cert: Path, key: Path) -> None:
    """Refuse, in one line and before anything is bound, a certificate and key TLS cannot use."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except OSError as exc:
        raise DaemonStartError(f"cannot read the TLS certificate or key ({exc.filename or cert}): "
                               f"{exc.strerror or one_line(exc)}") from None
    except ssl.SSLError as exc:
        raise DaemonStartError(f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate and its "
                               f"private key ({exc.reason or one_line(exc)})") from None
    if key.stat().st_mode & 0o077:
        log.warning("the TLS key %s is readable by other users; `chmod 600 %s`", key, key)


def connect_vllm(config: DaemonConfig) -> VllmEngine:
    """The vLLM engine over the configured servers, each checked to run the checkpoint ``--model``
    names (before anything is bound: a disagreement starts nothing)."""
    name = config.model or env(ENV_MODEL)
    if not name:
        raise DaemonStartError("--engine vllm needs --model: the checkpoint the vLLM servers run "
                               "(its tokenizer is used here)")
    from diffgemma.runtime.engine.loading import ModelLoadError
    from diffgemma.runtime.engine.vllm.connect import VllmStartError
    from diffgemma.runtime.engine.vllm.engine import VllmEngine

    try:
        engine = VllmEngine.connect(name, config.vllm_urls)
    except (VllmStartError, ModelLoadError) as exc:
        raise DaemonStartError(one_line(exc)) from None
    log.info("vLLM servers checked (they serve %s): %s", name, ", ".join(s.url for s in engine.pool.servers))
    return engine


def _scheduler(config: DaemonConfig, default_model: str | None, engine: VllmEngine | None = None) -> Scheduler:
    from diffgemma.runtime.daemon.scheduler import Limits, Scheduler

    limits = Limits(max_request_seconds=config.max_request_seconds or None, max_steps=config.max_steps,
                    max_tokens=config.max_tokens, allowed_models=tuple(config.allow_models),
                    # Over TCP any token holder could otherwise load any path: only what the operator named.
                    restrict_models=config.tcp or bool(config.allow_models),
                    # the vLLM servers run one checkpoint: requests cannot switch it
                    fixed_model=config.fixed_model or engine is not None)
    if engine is not None:  # it holds no model to unload: never idle out; one worker per job in flight
        return Scheduler(default_model, keep_alive=-1, max_queue=config.max_queue, limits=limits,
                         engine_loader=lambda *_: engine, workers=VLLM_WORKERS, engine_kind="vllm")
    return Scheduler(default_model, device=config.device, dtype=config.dtype, quantize=config.quantize,
                     keep_alive=config.keep_alive, max_queue=config.max_queue, sampler=config.sampler,
                     limits=limits)


def _http_server(scheduler: Scheduler, info: ServerInfo, config: DaemonConfig) -> Any:
    """A uvicorn server for the app that cancels the engine's work on SIGTERM and exits 0 after it."""
    import uvicorn

    from diffgemma.runtime.daemon.server import create_app

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Stop the engine at its next step, so shutdown does not wait for a long generation.
            scheduler.cancel_all()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the caught SIGTERM once it has stopped, which would kill us before
            # the cleanup in `serve` (socket, pid file, lock, model). A signal-stopped daemon has
            # shut down cleanly: forget the signal and exit 0.
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    uv_config = uvicorn.Config(create_app(scheduler, info), log_level="warning", access_log=False,
                               lifespan="off", timeout_graceful_shutdown=5, server_header=False,
                               ssl_certfile=config.tls_cert, ssl_keyfile=config.tls_key)
    return Server(uv_config)


def serve(config: DaemonConfig) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT. Returns the exit status.

    Raises DaemonStartError (before anything is bound) when the daemon cannot start, and after
    shutting down when the model it was started with does not load: a daemon with nothing to
    serve does not stay behind holding its address and memory (code ``model_load_failed``).
    """
    _setup_logging()
    config.check()
    engine = connect_vllm(config) if config.engine == "vllm" else None
    default_model: str | None
    if engine is not None:
        default_model, notice = engine.checkpoint.name, None
    else:
        default_model, notice = resolve_default_model(config.model)
    # Everything slow to import or build comes before the address is claimed: once it holds the
    # address a daemon answers within moments, so a holder that does not answer is stuck.
    scheduler = _scheduler(config, default_model, engine)
    import uvicorn  # noqa: F401

    from diffgemma.runtime.daemon import server as _server  # noqa: F401

    lock = AddressLock(paths.lock_path(config.address))
    try:
        sock, info = _bind(config, lock)
    except BaseException:
        if engine is not None:
            engine.close()
        raise
    info.notice = notice
    if notice:
        log.warning("%s", notice)
    pid_file = paths.pid_path(config.address)
    server = _http_server(scheduler, info, config)
    failed: list[BaseException] = []

    def load_failed(exc: BaseException) -> None:  # the worker thread: stop serving
        failed.append(exc)
        server.should_exit = True

    scheduler.start()
    if config.preload and default_model:
        scheduler.preload(on_failure=load_failed)
    team = info.team
    if team is not None:
        # SIGHUP reads the tokens file again (edits are also noticed by themselves: see team.py).
        signal.signal(signal.SIGHUP, lambda _sig, _frame: team.tokens.request_reload())
    try:
        pid_file.write_text(f"{os.getpid()}\n")
        log.info("diffgemma daemon (pid %d) listening on %s; model: %s", os.getpid(), config.describe(),
                 default_model or "none (requests must name one)")
        if info.token:
            log.info("TCP clients must send `Authorization: Bearer <token>`; the token is in %s",
                     paths.token_path())
        if info.team is not None:
            log.info("developers from %s: %s", config.tokens_file, ", ".join(info.team.tokens.names) or "none")
        server.run(sockets=[sock])
    finally:
        scheduler.stop()
        if not config.tcp:
            with contextlib.suppress(OSError):
                config.socket_path().unlink()
        with contextlib.suppress(OSError):
            if paths.read_pid(pid_file) == os.getpid():
                pid_file.unlink()
        sock.close()
        lock.release()
        log.info("daemon stopped")
    if failed:
        raise DaemonStartError(f"the model failed to load: {one_line(failed[0])}", MODEL_LOAD_FAILED)
    return 0
