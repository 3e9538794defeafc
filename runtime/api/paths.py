"""Where the daemon keeps its socket, pid/log/token files and configuration (torch-free).

Every location can be overridden by an environment variable, so tests and several users on one
machine never collide: DIFFGEMMA_RUNTIME_DIR, DIFFGEMMA_SOCKET, DIFFGEMMA_STATE_DIR,
DIFFGEMMA_CONFIG_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffgemma.runtime.api import config
from diffgemma.runtime.api.errors import DaemonUnavailable

APP_NAME = "diffgemma"
SOCKET_NAME = "daemon.sock"


def _private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make the leaf 0700: the socket's safety rests on it."""
    path.mkdir(parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o777) != 0o700:
        os.chmod(path, 0o700)
    return path


class UnusableRuntimeDir(DaemonUnavailable):
    """The directory for the daemon's socket cannot be created or is not private (so no daemon can
    be reached there); one line."""


def _runtime_base() -> tuple[Path, str]:
    """(directory, what names it) where the socket's directory goes, without creating anything.

    XDG_RUNTIME_DIR when set. Unset, the system's per-user /run/user/<uid> when it exists, else
    our own state directory: both private to the user. Never a shared temporary directory (where
    platformdirs falls back to): another user could create the directory first, or run a
    daemon there that every front end would then talk to.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg), "XDG_RUNTIME_DIR"
    system = Path(f"/run/user/{os.getuid()}") if hasattr(os, "getuid") else None
    if system is not None and system.is_dir() and os.access(system, os.W_OK | os.X_OK):
        return system, str(system)
    return state_dir() / "run", "the state directory"


def runtime_dir() -> Path:
    """The per-user runtime directory (0700) that holds the daemon's socket.

    Raises UnusableRuntimeDir when it cannot be made (e.g. XDG_RUNTIME_DIR names a regular
    file, or a path under one): a broken setting is reported, never replaced by another place.
    """
    override = config.env(config.ENV_RUNTIME_DIR)
    if override:
        path, named = Path(override).expanduser(), config.ENV_RUNTIME_DIR
    else:
        base, named = _runtime_base()
        path = base / APP_NAME
    try:
        made = _private_dir(path)
        if not made.is_dir() or made.is_symlink():
            raise NotADirectoryError(20, "Not a directory")
        return made
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UnusableRuntimeDir(
            f"cannot use the runtime directory {path} (from {named}): {reason}; "
            f"fix it, or set {config.ENV_RUNTIME_DIR} or {config.ENV_SOCKET}"
        ) from None


def default_socket_path() -> Path:
    """The daemon's Unix socket: $DIFFGEMMA_SOCKET, else ``runtime_dir()/daemon.sock``."""
    override = config.env(config.ENV_SOCKET)
    if override:
        return Path(override).expanduser()
    return runtime_dir() / SOCKET_NAME


def state_dir() -> Path:
    """Pid file, log file and the TCP bearer token live here (0700)."""
    override = config.env(config.ENV_STATE_DIR)
    if override:
        return _private_dir(Path(override).expanduser())
    import platformdirs

    return _private_dir(Path(platformdirs.user_state_dir(APP_NAME)))


def config_dir() -> Path:
    """User configuration (created on demand)."""
    override = config.env(config.ENV_CONFIG_DIR)
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


def read_pid(path: Path) -> int | None:
    """The pid a pid or lock file names, or None when it is missing or holds none."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
