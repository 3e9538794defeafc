"""Where the daemon keeps its socket, pid/log/token files and configuration (torch-free).

Every location can be overridden by an environment variable, so tests and several users on one
machine never collide: DIFFGEMMA_RUNTIME_DIR, DIFFGEMMA_SOCKET, DIFFGEMMA_STATE_DIR,
DIFFGEMMA_CONFIG_DIR.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

APP_NAME = "diffgemma"
SOCKET_NAME = "daemon.sock"


def _private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make the leaf 0700: the socket's safety rests on it."""
    path.mkdir(parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o777) != 0o700:
        os.chmod(path, 0o700)
    return path


def runtime_dir() -> Path:
    """The per-user runtime directory (0700) that holds the daemon's socket."""
    override = os.environ.get("DIFFGEMMA_RUNTIME_DIR")
    if override:
        return _private_dir(Path(override).expanduser())
    import platformdirs

    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR platformdirs falls back to /tmp/runtime-$UID and warns; the
        # fallback is fine for us because we force 0700 on the directory ourselves.
        warnings.simplefilter("ignore")
        base = platformdirs.user_runtime_dir(APP_NAME)
    return _private_dir(Path(base))


def default_socket_path() -> Path:
    """The daemon's Unix socket: $DIFFGEMMA_SOCKET, else ``runtime_dir()/daemon.sock``."""
    override = os.environ.get("DIFFGEMMA_SOCKET")
    if override:
        return Path(override).expanduser()
    return runtime_dir() / SOCKET_NAME


def state_dir() -> Path:
    """Pid file, log file and the TCP bearer token live here (0700)."""
    override = os.environ.get("DIFFGEMMA_STATE_DIR")
    if override:
        return _private_dir(Path(override).expanduser())
    import platformdirs

    return _private_dir(Path(platformdirs.user_state_dir(APP_NAME)))


def config_dir() -> Path:
    """User configuration (created on demand)."""
    override = os.environ.get("DIFFGEMMA_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def token_path() -> Path:
    """The bearer token a TCP daemon demands (0600)."""
    return state_dir() / "token"


def pid_path(socket: Path | None = None) -> Path:
    """The pid file of the daemon serving ``socket`` (one per socket, so test daemons never clash)."""
    return state_dir() / f"{_stem(socket)}.pid"


def log_path(socket: Path | None = None) -> Path:
    return state_dir() / f"{_stem(socket)}.log"


def lock_path(socket: Path) -> Path:
    """The exclusive lock that keeps two daemons off one socket (lives beside the socket)."""
    return socket.with_name(socket.name + ".lock")


def _stem(socket: Path | None) -> str:
    if socket is None or Path(socket) == default_socket_path():
        return "daemon"
    import hashlib

    digest = hashlib.sha1(str(Path(socket).expanduser().resolve()).encode()).hexdigest()[:10]
    return f"daemon-{digest}"
