"""Options shared by the generating commands, with environment and config-file fallbacks.

Precedence, highest first: the command-line flag, the `DIFFGEMMA_*` environment variable
(Typer reads it), the config file `<config dir>/config.toml`, the built-in default.

The config file is TOML with top-level keys; tables (`[daemon]`, `[lsp]`, ...) belong to
other parts of diffgemma and are left alone here (the values are examples; the defaults are
runtime/api/config.py's CONFIG_KEYS):

    model = "google/diffusiongemma-26B-A4B-it"
    socket = "/run/user/1000/diffgemma/daemon.sock"
    url = "https://gpu-box.example.com:8443"
    token_file = "~/.config/diffgemma/token"
    ca_cert = "~/.config/diffgemma/team-ca.pem"
    max_tokens = 128
    steps = 24
    seed = 0
    marker = "<FILL>"
    context_chars = 6000
    backup = true
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from diffgemma.cli.errors import UsageProblem
from diffgemma.runtime.api import config
from diffgemma.runtime.api.config import (
    CONTEXT_CHARS_MIN,
    DEFAULT_CONTEXT_CHARS,
    DEFAULT_MARKER,
    INT_LIMITS,
    MAX_STEPS,
    MAX_TOKENS_LIMIT,
)
from diffgemma.runtime.api.errors import InvalidValue
from diffgemma.runtime.api.remote import URL_LIKE, Remote, refuse_url_socket
from diffgemma.runtime.api.request_builder import Sampling


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


def int_option(low: int, high: int, value: Any) -> int:
    """The Typer ``parser`` of an integer option: ASCII digits from ``low`` to ``high``. An option
    binds its bounds with ``functools.partial(int_option, low, high)``, so nothing runs until a
    value is parsed."""
    if isinstance(value, int):  # a default Typer passes through
        return value
    try:
        return parse_ascii_int(str(value), low, high)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

# Typer parameter declarations, shared so every command spells them the same way.
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar=config.ENV_MODEL,
        show_envvar=True,
        help="Model name or checkpoint directory the daemon should serve (started with it when absent).",
        show_default=False,
    ),
]
SocketOpt = Annotated[
    str | None,
    typer.Option(
        "--socket",
        envvar=config.ENV_SOCKET,
        show_envvar=True,
        help="Unix socket of the daemon.",
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar=config.ENV_URL,
        show_envvar=True,
        help="A daemon on another machine, https://HOST:PORT (never started from here; instead of --socket).",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="With --url: the bearer token to send (else --token-file, then DIFFGEMMA_TOKEN, then the state "
        "directory's token file).",
        show_default=False,
    ),
]
TokenFileOpt = Annotated[
    str | None,
    typer.Option(
        "--token-file",
        envvar=config.ENV_TOKEN_FILE,
        show_envvar=True,
        help="With --url: a file (mode 0600) holding the bearer token.",
        show_default=False,
    ),
]
CaCertOpt = Annotated[
    str | None,
    typer.Option(
        "--ca-cert",
        envvar=config.ENV_CA_CERT,
        show_envvar=True,
        help="With an https --url: check the daemon's certificate against this PEM file (its CA's certificate, "
        "or its own) instead of the system's store.",
        show_default=False,
    ),
]
MaxTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-tokens",
        envvar=config.ENV_MAX_TOKENS,
        show_envvar=True,
        parser=functools.partial(int_option, *INT_LIMITS["max_tokens"]),
        metavar="INTEGER",
        help=f"Most tokens to generate (1-{MAX_TOKENS_LIMIT}).",
        show_default=False,
    ),
]
StepsOpt = Annotated[
    int | None,
    typer.Option(
        "--steps",
        envvar=config.ENV_STEPS,
        show_envvar=True,
        parser=functools.partial(int_option, *INT_LIMITS["steps"]),
        metavar="INTEGER",
        help=f"Most denoising steps per canvas (1-{MAX_STEPS}).",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        envvar=config.ENV_SEED,
        show_envvar=True,
        parser=functools.partial(int_option, *INT_LIMITS["seed"]),
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
        envvar=config.ENV_MARKER,
        show_envvar=True,
        help=f"Cursor marker in a piped buffer (default {DEFAULT_MARKER}).",
        show_default=False,
    ),
]
ContextCharsOpt = Annotated[
    int | None,
    typer.Option(
        "--context-chars",
        envvar=config.ENV_CONTEXT_CHARS,
        show_envvar=True,
        parser=functools.partial(int_option, *INT_LIMITS["context_chars"]),
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
AllowBrokenOpt = Annotated[
    bool,
    typer.Option("--allow-broken", help="Take the answer even when it adds syntax errors (by default an "
                                         "answer never does: it is cut, or left empty with the reason on "
                                         "stderr, and nothing that would break the file is written)."),
]
NoBackupOpt = Annotated[
    bool,
    typer.Option("--no-backup", help="With --apply: do not keep FILE.diffgemma.bak."),
]


@dataclass(frozen=True)
class Settings:
    """The resolved options of one command run."""

    sampling: Sampling = field(default_factory=Sampling)  # model, max_tokens, steps, seed: sent as they are
    socket: str | None = None
    remote: Remote | None = None  # --url: a daemon elsewhere, used instead of the socket's
    marker: str = DEFAULT_MARKER
    context_chars: int = DEFAULT_CONTEXT_CHARS
    backup: bool = True
    quiet: bool = False
    language: str | None = None  # --language; None: from the file name or its first line
    allow_broken: bool = False  # --allow-broken: no syntax gate, in the daemon or before a write
    sources: dict[str, str] = field(default_factory=dict)  # key -> "flag/env" | "config" | "default"


def resolve(quiet: bool = False, language: str | None = None, token: str | None = None, allow_broken: bool = False,
            **given: Any) -> Settings:
    """Fill every option left unset by flag and environment from the config file, then defaults.

    A bad config file, or a value out of range, is a UsageProblem.
    """
    try:
        from_file = config.load_config()
    except config.ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, (_kind, default) in config.CONFIG_KEYS.items():
        value = given.get(key)
        if value is not None:
            values[key], sources[key] = value, "flag/env"
        elif key in from_file:
            values[key], sources[key] = from_file[key], "config"
        else:
            values[key], sources[key] = default, "default"
    if values["socket"]:
        values["socket"] = os.path.expanduser(values["socket"])
    if values["model"] and values["model"].startswith("~"):
        values["model"] = os.path.expanduser(values["model"])
    if not values["marker"]:
        raise UsageProblem("the marker must not be empty")
    # Flags and their variables were checked by their parser, config.toml as it was read, and the
    # defaults hold: this covers callers in Python.
    for key in INT_LIMITS:
        if sources[key] == "flag/env":
            try:
                config.check_int(key, values[key])
            except config.ConfigError as exc:
                raise UsageProblem(str(exc)) from None
    remote = _remote(values, sources, token)
    sampling = Sampling(**{key: values.pop(key) for key in ("model", "max_tokens", "steps", "seed")})
    return Settings(sampling=sampling, remote=remote, quiet=quiet, language=language, allow_broken=allow_broken,
                    sources=sources, **values)


def _remote(values: dict[str, Any], sources: dict[str, str], token: str | None) -> Remote | None:
    """The remote daemon the settings name (taking url, token_file and ca_cert out of ``values``),
    or None for the local one. A URL and a socket both set: the one set at the higher level wins
    (a flag over config.toml); at the same level it is a UsageProblem."""
    url, token_file, ca_cert = values.pop("url"), values.pop("token_file"), values.pop("ca_cert")
    try:
        if values["socket"] and URL_LIKE.match(values["socket"]):
            refuse_url_socket(values["socket"])
        if url is None:
            return None
        if values["socket"]:
            if sources["socket"] == sources["url"]:
                raise UsageProblem("use either --url or --socket, not both")
            if sources["socket"] == "flag/env":
                return None
            values["socket"] = None
        return Remote.resolve(url, token, token_file, ca_cert)
    except InvalidValue as exc:
        raise UsageProblem(str(exc)) from None


# The options every generating command (infill, edit, watch) takes: name -> (declaration, default).
SHARED_OPTIONS: dict[str, tuple[Any, Any]] = {
    "language": (LanguageOpt, None),
    "model": (ModelOpt, None),
    "socket": (SocketOpt, None),
    "url": (UrlOpt, None),
    "token": (TokenOpt, None),
    "token_file": (TokenFileOpt, None),
    "ca_cert": (CaCertOpt, None),
    "max_tokens": (MaxTokensOpt, None),
    "steps": (StepsOpt, None),
    "seed": (SeedOpt, None),
    "context_chars": (ContextCharsOpt, None),
    "no_backup": (NoBackupOpt, False),
    "allow_broken": (AllowBrokenOpt, False),
    "quiet": (QuietOpt, False),
}


def shared_options(*, marker: bool,
                   without: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the options every generating command takes (and ``--marker`` when it reads
    markers; none of ``without``, options that mean nothing to it), resolved once (`resolve`) into
    its keyword-only ``settings`` parameter.

    Typer reads a command's parameters from its signature, so the command is wrapped in one whose
    signature is the command's own parameters followed by the shared ones.
    """
    shared = {name: option for name, option in {**({"marker": (MarkerOpt, None)} if marker else {}),
                                                **SHARED_OPTIONS}.items() if name not in without}

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=declared)
                 for name, (declared, default) in shared.items()]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> None:
            given = {name: kwargs.pop(name, default) for name, (_declared, default) in shared.items()}
            backup = False if given.pop("no_backup") else None
            command(*args, settings=resolve(backup=backup, **given), **kwargs)

        run.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        return run

    return decorate

