"""The daemon's own files: its pid, log and lock files and the TCP bearer token (torch-free).

They live in the folders runtime/api/config.py resolves (the state directory, or beside the
socket), one set per daemon address.
"""

from __future__ import annotations

from pathlib import Path

from diffgemma.runtime.api.config import default_socket_path, state_dir


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
