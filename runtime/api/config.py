"""Every setting diffgemma reads from outside, in one place: the `DIFFGEMMA_*` environment
variables, the keys of config.toml, the limits a request, a flag or a setting must keep, and the
folders those settings name (the socket's runtime directory, the state and config directories).

Torch-free and import-light (front ends, the daemon and the engine all read it). Code elsewhere
names a variable through the constants below and reads it with ``env``; it never spells
``"DIFFGEMMA_..."`` or a bound itself, so a value refused in one front end is refused in all.

Precedence for the front ends, highest first: command-line flag, environment variable,
config.toml (`<config dir>/config.toml`), built-in default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from diffgemma.runtime.api.errors import DaemonUnavailable, InvalidValue, one_line

# --- environment variables -------------------------------------------------------------------
# Where things are (resolved under "folders" below; the daemon's files in them: runtime/api/paths.py).
ENV_SOCKET = "DIFFGEMMA_SOCKET"  # the daemon's Unix socket
ENV_RUNTIME_DIR = "DIFFGEMMA_RUNTIME_DIR"  # folder of the socket and its lock
ENV_STATE_DIR = "DIFFGEMMA_STATE_DIR"  # pid file, log, TCP token
ENV_CONFIG_DIR = "DIFFGEMMA_CONFIG_DIR"  # folder of config.toml
# The daemon (read by `diffgemma serve` and by a daemon that a front end starts in the background).
ENV_MODEL = "DIFFGEMMA_MODEL"  # default model: a checkpoint folder or a Hugging Face id
ENV_DEVICE = "DIFFGEMMA_DEVICE"  # cpu, cuda, cuda:1, ...
ENV_QUANTIZE = "DIFFGEMMA_QUANTIZE"  # 4bit: quantize an unquantized checkpoint while loading
ENV_KEEP_ALIVE = "DIFFGEMMA_KEEP_ALIVE"  # seconds an idle model stays loaded
ENV_TOKEN = "DIFFGEMMA_TOKEN"  # bearer token for TCP (else the token file in the state dir)
# A team server (`serve`): per-developer tokens and TLS.
ENV_TOKENS_FILE = "DIFFGEMMA_TOKENS_FILE"  # `name token` per line: who may call a TCP daemon
ENV_TLS_CERT = "DIFFGEMMA_TLS_CERT"  # PEM certificate (chain) a TCP daemon serves HTTPS with
ENV_TLS_KEY = "DIFFGEMMA_TLS_KEY"  # its private key
# A remote daemon (the front ends): where it is and how to prove who we are.
ENV_URL = "DIFFGEMMA_URL"  # http(s)://host:port of a daemon on another machine (never auto-started)
ENV_TOKEN_FILE = "DIFFGEMMA_TOKEN_FILE"  # a file holding the bearer token to send it
ENV_CA_CERT = "DIFFGEMMA_CA_CERT"  # PEM certificate(s) to verify its TLS certificate with
# The generating commands' defaults (cli/options.py declares the flags).
ENV_MAX_TOKENS = "DIFFGEMMA_MAX_TOKENS"
ENV_STEPS = "DIFFGEMMA_STEPS"
ENV_SEED = "DIFFGEMMA_SEED"
ENV_MARKER = "DIFFGEMMA_MARKER"
ENV_CONTEXT_CHARS = "DIFFGEMMA_CONTEXT_CHARS"
# The language server's transport (`diffgemma lsp`).
ENV_LSP_HOST = "DIFFGEMMA_LSP_HOST"
ENV_LSP_PORT = "DIFFGEMMA_LSP_PORT"
ENV_LSP_LOG = "DIFFGEMMA_LSP_LOG"


def env(name: str) -> str | None:
    """The variable's value, or None when it is unset or blank (blank means unset everywhere)."""
    value = os.environ.get(name)
    return value if value is not None and value.strip() else None


# --- request limits (the daemon refuses beyond them; front ends check first) ------------------
MAX_TOKENS_LIMIT = 8192  # longest answer any request may ask for
MAX_STEPS = 1024  # denoising steps per canvas
MAX_EXTRA_FILES = 64  # more extra-context chunks than this: the most recent ones are kept
# Extra context kept per request, in characters: beyond it the oldest chunks are dropped. About
# 12k tokens of code, well inside the model's context next to a prefix, suffix and canvas.
MAX_EXTRA_CHARS = 48_000
MAX_ALTERNATIVES = 4  # OpenAI ``n`` / llama.cpp ``n_cmpl``: candidates denoised as one batch
MAX_TIME_LIMIT_MS = 3_600_000
MAX_KEEP_ALIVE_S = 7 * 24 * 3600.0
MAX_ID_LENGTH = 200
MAX_HOLES = 32  # several holes in one infill request
SEED_MAX = 2**63 - 1
MAX_JSON_DEPTH = 64  # no client body nests deeper than a few levels; deeper is an attack
MAX_FILE_BYTES = 4 * 1024 * 1024  # largest file the CLI reads or writes
# Sampling overrides (``options``): temperatures in [MIN_TEMPERATURE, MAX_TEMPERATURE] (a float32 sampler
# divides by them), the stability threshold in 0..MAX_STABILITY_THRESHOLD steps, the entropy bound and
# the confidence threshold in (0, MAX_OPTION_VALUE].
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 10.0
MAX_STABILITY_THRESHOLD = 64
MAX_OPTION_VALUE = 1e6
MAX_LINE_NUMBER = 2**31 - 1  # a line or column on the wire (LSP's uinteger range)
# Next-edit: the recent edits a request carries (newest kept when there are more) and the
# confidence under which nothing is proposed when the request names none.
MAX_NEXT_EDITS = 16
MAX_NEXT_EDIT_DIFF_CHARS = 16_000
DEFAULT_NEXT_EDIT_THRESHOLD = 0.5

# --- daemon defaults (flags of `serve` / `daemon start`) ----------------------------------------
DEFAULT_KEEP_ALIVE_S = 600.0
DEFAULT_MAX_QUEUE = 16
MAX_QUEUE_LIMIT = 4096  # most requests --queue lets wait at once
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # largest request body the daemon reads (--max-body)
MIN_MAX_BODY = 1024  # smallest --max-body: below it not even a short request fits
MAX_BODY_LIMIT = 2**31 - 1
DEFAULT_MAX_REQUEST_SECONDS = 30.0  # interactive use: nobody waits longer for a completion
MAX_REQUEST_SECONDS = 24 * 3600.0
DEFAULT_MAX_STEPS = 256  # per canvas; the checkpoints settle in 12-16 of their default 48
DEFAULT_MAX_TOKENS = 1024  # longer answers are capped (4 canvases of the real model)
SAMPLERS = ("stream", "stock")  # --sampler; None: the engine's default (stream)
ENGINES = ("local", "vllm")  # serve --engine: the model in the daemon's process, or vLLM servers
# Jobs a daemon with --engine vllm runs at once (each one's canvases are concurrent vLLM requests;
# the vLLM servers batch them): a worker thread per job, blocked while vLLM denoises.
VLLM_WORKERS = 32
QUANTIZATIONS = ("4bit",)  # --quantize ("nf4" is taken as another name for 4bit)

# --- front-end defaults ------------------------------------------------------------------------
DEFAULT_MARKER = "<FILL>"
DEFAULT_CONTEXT_CHARS = 6000
CONTEXT_CHARS_MIN = 200
CONTEXT_CHARS_MAX = 1_000_000
# The language server caps tokens tighter than the daemon (ghost text is interactive).
LSP_MAX_TOKENS_LIMIT = 4096
LSP_DEBOUNCE_LIMIT_MS = 5000
LSP_CONTEXT_CHARS_MIN = 64
LSP_CONTEXT_CHARS_LIMIT = 200_000

# --- config.toml ---------------------------------------------------------------------------------
# Top-level keys -> (type, default). Tables (`[lsp]`, ...) belong to other components and are
# skipped by ``load_config``.
CONFIG_KEYS: dict[str, tuple[type, Any]] = {
    "model": (str, None),
    "socket": (str, None),
    "url": (str, None),
    "token_file": (str, None),
    "ca_cert": (str, None),
    "max_tokens": (int, None),
    "steps": (int, None),
    "seed": (int, None),
    "marker": (str, DEFAULT_MARKER),
    "context_chars": (int, DEFAULT_CONTEXT_CHARS),
    "backup": (bool, True),
}
# key -> (lowest, highest), for the flags, their environment variables and config.toml alike.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "max_tokens": (1, MAX_TOKENS_LIMIT),
    "steps": (1, MAX_STEPS),
    "seed": (0, SEED_MAX),
    "context_chars": (CONTEXT_CHARS_MIN, CONTEXT_CHARS_MAX),
}


class ConfigError(InvalidValue):
    """config.toml cannot be read or holds a bad key or value; the message is one line."""


def config_file() -> Path:
    """config.toml in $DIFFGEMMA_CONFIG_DIR, else in the user config directory."""
    override = env(ENV_CONFIG_DIR)
    if override:
        return Path(override).expanduser() / "config.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:20] + "…"


def check_int(key: str, value: int) -> int:
    """Range-check an integer setting against INT_LIMITS; ConfigError names the bounds."""
    low, high = INT_LIMITS[key]
    if not low <= value <= high:
        raise ConfigError(f"{key} must be from {low} to {high} (got {_shown(value)})")
    return value


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The top-level keys of config.toml, checked; a missing file is an empty config."""
    import tomllib

    path = path or config_file()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError, or an int of 4,300+ digits
        raise ConfigError(f"bad config file {path}: {one_line(exc)}") from None
    config: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            continue  # a table for another component
        name = key.replace("-", "_")
        if name not in CONFIG_KEYS:
            raise ConfigError(f"config file {path}: unknown key '{key}' (known: {', '.join(CONFIG_KEYS)})")
        kind = CONFIG_KEYS[name][0]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"config file {path}: '{key}' must be {kind.__name__}, got {value!r}")
        if name in INT_LIMITS and isinstance(value, int):
            try:
                check_int(name, value)
            except ConfigError as exc:
                raise ConfigError(f"config file {path}: {exc}") from None
        config[name] = value
    return config


# --- folders -------------------------------------------------------------------------------------
# Every one can be moved by an environment variable, so tests and several users on one machine
# never collide.
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
    override = env(ENV_RUNTIME_DIR)
    if override:
        path, named = Path(override).expanduser(), ENV_RUNTIME_DIR
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
            f"fix it, or set {ENV_RUNTIME_DIR} or {ENV_SOCKET}"
        ) from None


def default_socket_path() -> Path:
    """The daemon's Unix socket: $DIFFGEMMA_SOCKET, else ``runtime_dir()/daemon.sock``."""
    override = env(ENV_SOCKET)
    if override:
        return Path(override).expanduser()
    return runtime_dir() / SOCKET_NAME


def state_dir() -> Path:
    """Pid file, log file and the TCP bearer token live here (0700)."""
    override = env(ENV_STATE_DIR)
    if override:
        return _private_dir(Path(override).expanduser())
    import platformdirs

    return _private_dir(Path(platformdirs.user_state_dir(APP_NAME)))
