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

DEFAULT_MARKER = "<FILL>"
DEFAULT_CONTEXT_CHARS = 6000

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
        min=1,
        help="Most tokens to generate.",
        show_default=False,
    ),
]
StepsOpt = Annotated[
    int | None,
    typer.Option(
        "--steps",
        envvar="DIFFGEMMA_STEPS",
        show_envvar=True,
        min=1,
        help="Most denoising steps per canvas.",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        envvar="DIFFGEMMA_SEED",
        show_envvar=True,
        min=0,
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
        min=200,
        help=f"Budget of context characters around the cursor (default {DEFAULT_CONTEXT_CHARS}).",
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
    from diffgemma.runtime.paths import config_dir

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
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
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
    for key in ("max_tokens", "steps"):
        if values[key] is not None and values[key] < 1:
            raise UsageProblem(f"{key.replace('_', '-')} must be at least 1 (got {values[key]})")
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
