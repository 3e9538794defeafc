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


def tcp_address(host: str, port: int) -> str:
    """The key that names a TCP daemon where a socket path names a Unix one."""
    return f"tcp:{host}:{port}"


def pid_path(address: Path | str | None = None) -> Path:
    """The pid file of the daemon at ``address`` (a socket path or ``tcp_address``); one per address."""
    return state_dir() / f"{_stem(address)}.pid"


def log_path(address: Path | str | None = None) -> Path:
    return state_dir() / f"{_stem(address)}.log"


def lock_path(address: Path | str) -> Path:
    """The exclusive lock that keeps two daemons off one address (beside the socket, or in state_dir)."""
    if isinstance(address, str) and address.startswith("tcp:"):
        return state_dir() / f"{_stem(address)}.lock"
    path = Path(address)
    return path.with_name(path.name + ".lock")


def _stem(address: Path | str | None) -> str:
    import hashlib

    if isinstance(address, str) and address.startswith("tcp:"):
        return "daemon-" + address.replace(":", "-").replace("/", "-")
    if address is None or Path(address) == default_socket_path():
        return "daemon"
    digest = hashlib.sha1(str(Path(address).expanduser().resolve()).encode()).hexdigest()[:10]
    return f"daemon-{digest}"
