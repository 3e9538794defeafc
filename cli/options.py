"""Options shared by the generating commands, with environment and config-file fallbacks.

Precedence, highest first: the command-line flag, the `DIFFGEMMA_*` environment variable
(Typer reads it), the config file `<config dir>/config.toml`, the built-in default.

The config file is TOML with top-level keys; tables (`[daemon]`, `[lsp]`, ...) belong to
other parts of diffgemma and are left alone here:

    model = "google/diffusiongemma-26B-A4B-it"
    socket = "/run/user/1000/diffgemma/daemon.sock"
    max_tokens = 128
    steps = 24
    seed = 0
    marker = "<FILL>"
    context_chars = 6000
    backup = true
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from diffgemma.cli.errors import UsageProblem
from diffgemma.runtime.api.protocol import MAX_STEPS, MAX_TOKENS_LIMIT

DEFAULT_MARKER = "<FILL>"
DEFAULT_CONTEXT_CHARS = 6000
CONTEXT_CHARS_MIN = 200
CONTEXT_CHARS_MAX = 1_000_000
SEED_MAX = 2**63 - 1  # the daemon's bound

# key -> (lowest, highest): one table for the flags, their environment variables and config.toml,
# so a value refused on the command line is refused in the file too. The daemon's own limits
# are imported, so a request that would be refused there is refused here, before connecting.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "max_tokens": (1, MAX_TOKENS_LIMIT),
    "steps": (1, MAX_STEPS),
    "seed": (0, SEED_MAX),
    "context_chars": (CONTEXT_CHARS_MIN, CONTEXT_CHARS_MAX),
}


def parse_ascii_int(text: str, low: int, high: int) -> int:
    """A whole number written in ASCII digits, from ``low`` to ``high``; ValueError otherwise.

    Python's int() also reads other scripts' digits ("٣", "２") and has no size limit worth
    relying on (a 5,000-digit string raises a different error); neither is a number a user typed
    on purpose. The length check comes first so no huge string is ever converted.
    """
    digits = text.strip()
    body = digits[1:] if digits.startswith("-") else digits
    if not body or not body.isascii() or not body.isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    if len(body) > len(str(max(abs(low), abs(high)))) or not low <= int(digits) <= high:
        shown = digits if len(digits) <= 24 else digits[:20] + "…"
        raise ValueError(f"{shown} is out of range (from {low} to {high})")
    return int(digits)


def check_int(key: str, value: int) -> int:
    """Range-check an already-typed integer (from config.toml) against INT_LIMITS."""
    low, high = INT_LIMITS[key]
    if not low <= value <= high:
        shown = str(value) if len(str(value)) <= 24 else str(value)[:20] + "…"
        raise UsageProblem(f"{key} must be from {low} to {high} (got {shown})")
    return value


def _int_parser(key: str) -> Any:
    """A Typer ``parser`` for an integer option: ASCII digits within INT_LIMITS[key]."""
    return int_parser(*INT_LIMITS[key])


def int_parser(low: int, high: int) -> Any:
    """A Typer ``parser`` for any integer option: ASCII digits from ``low`` to ``high``."""

    def parse(value: Any) -> int:
        if isinstance(value, int):  # a default Typer passes through
            return value
        try:
            return parse_ascii_int(str(value), low, high)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

    return parse

# key -> (type, default); the single source of truth for what config.toml may set here.
CONFIG_KEYS: dict[str, tuple[type, Any]] = {
    "model": (str, None),
    "socket": (str, None),
    "max_tokens": (int, None),
    "steps": (int, None),
    "seed": (int, None),
    "marker": (str, DEFAULT_MARKER),
    "context_chars": (int, DEFAULT_CONTEXT_CHARS),
    "backup": (bool, True),
}

# Typer parameter declarations, shared so every command spells them the same way.
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar="DIFFGEMMA_MODEL",
        show_envvar=True,
        help="Model name or checkpoint directory the daemon should serve (started with it when absent).",
        show_default=False,
    ),
]
SocketOpt = Annotated[
    str | None,
    typer.Option(
        "--socket",
        envvar="DIFFGEMMA_SOCKET",
        show_envvar=True,
        help="Unix socket of the daemon.",
        show_default=False,
    ),
]
MaxTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-tokens",
        envvar="DIFFGEMMA_MAX_TOKENS",
        show_envvar=True,
        parser=_int_parser("max_tokens"),
        metavar="INTEGER",
        help=f"Most tokens to generate (1-{MAX_TOKENS_LIMIT}).",
        show_default=False,
    ),
]
StepsOpt = Annotated[
    int | None,
    typer.Option(
        "--steps",
        envvar="DIFFGEMMA_STEPS",
        show_envvar=True,
        parser=_int_parser("steps"),
        metavar="INTEGER",
        help=f"Most denoising steps per canvas (1-{MAX_STEPS}).",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        envvar="DIFFGEMMA_SEED",
        show_envvar=True,
        parser=_int_parser("seed"),
        metavar="INTEGER",
        help="Sampling seed, for repeatable output.",
        show_default=False,
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print only the result: no live view, no progress lines."),
]
LanguageOpt = Annotated[
    str | None,
    typer.Option(
        "--language",
        "-l",
        help="Language of the buffer (default: from the file extension).",
        show_default=False,
    ),
]
MarkerOpt = Annotated[
    str | None,
    typer.Option(
        "--marker",
        envvar="DIFFGEMMA_MARKER",
        show_envvar=True,
        help=f"Cursor marker in a piped buffer (default {DEFAULT_MARKER}).",
        show_default=False,
    ),
]
ContextCharsOpt = Annotated[
    int | None,
    typer.Option(
        "--context-chars",
        envvar="DIFFGEMMA_CONTEXT_CHARS",
        show_envvar=True,
        parser=_int_parser("context_chars"),
        metavar="INTEGER",
        help=f"Budget of context characters around the cursor (default {DEFAULT_CONTEXT_CHARS}, "
        f"at least {CONTEXT_CHARS_MIN}).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
ApplyOpt = Annotated[
    bool,
    typer.Option(
        "--apply", help="Write the result into FILE (atomic, with a backup; refused if FILE changed)."
    ),
]
NoBackupOpt = Annotated[
    bool,
    typer.Option("--no-backup", help="With --apply: do not keep FILE.diffgemma.bak."),
]


def config_path() -> Path:
    from diffgemma.runtime.api.paths import config_dir

    return Path(config_dir()) / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Read the CLI keys of config.toml; a missing file is an empty config, a bad one an error."""
    import tomllib

    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageProblem(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError, or an int of 4,300+ digits
        raise UsageProblem(f"bad config file {path}: {str(exc).splitlines()[0]}") from None
    config: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            continue  # a table for another component
        key_norm = key.replace("-", "_")
        if key_norm not in CONFIG_KEYS:
            raise UsageProblem(f"config file {path}: unknown key '{key}' (known: {', '.join(CONFIG_KEYS)})")
        kind = CONFIG_KEYS[key_norm][0]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise UsageProblem(f"config file {path}: '{key}' must be {kind.__name__}, got {value!r}")
        if key_norm in INT_LIMITS:
            try:
                check_int(key_norm, value)
            except UsageProblem as exc:
                raise UsageProblem(f"config file {path}: {exc}") from None
        config[key_norm] = value
    return config


@dataclass
class Settings:
    """The resolved options of one command run."""

    model: str | None = None
    socket: str | None = None
    max_tokens: int | None = None
    steps: int | None = None
    seed: int | None = None
    marker: str = DEFAULT_MARKER
    context_chars: int = DEFAULT_CONTEXT_CHARS
    backup: bool = True
    quiet: bool = False
    sources: dict[str, str] = field(default_factory=dict)  # key -> "flag/env" | "config" | "default"


def resolve(quiet: bool = False, **given: Any) -> Settings:
    """Fill every option left unset by flag and environment from the config file, then defaults."""
    config = load_config()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, (_kind, default) in CONFIG_KEYS.items():
        value = given.get(key)
        if value is not None:
            values[key], sources[key] = value, "flag/env"
        elif key in config:
            values[key], sources[key] = config[key], "config"
        else:
            values[key], sources[key] = default, "default"
    if values["socket"]:
        values["socket"] = os.path.expanduser(values["socket"])
    if values["model"] and values["model"].startswith("~"):
        values["model"] = os.path.expanduser(values["model"])
    if not values["marker"]:
        raise UsageProblem("the marker must not be empty")
    for key in INT_LIMITS:  # flags were checked by their parser; this covers callers in Python
        if values[key] is not None:
            check_int(key, values[key])
    return Settings(quiet=quiet, sources=sources, **values)


def reflow(text: str) -> str:
    """Join the wrapped source lines of each prose paragraph, so Rich wraps help to the terminal.

    Paragraphs whose lines are indented (examples, tables) keep their line breaks.
    """
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.split("\n")
        if any(line.startswith(" ") for line in lines):
            paragraphs.append(paragraph)
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)
