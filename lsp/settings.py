"""The language server's settings: one typed tree parsed from initializationOptions or
workspace/didChangeConfiguration.

Parsing never raises: every field is checked on its own, a bad value falls back to its default
and yields a one-line problem the server shows to the user. Keys are the camelCase names editors
use in their JSON settings; a payload may be flat or nested under ``"diffgemma"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffgemma.runtime.api import config
from diffgemma.runtime.api.errors import InvalidValue
from diffgemma.runtime.api.remote import looks_like_url, normalize_url

SECTION = "diffgemma"

# The bounds come from runtime.api.config: they keep a typo (e.g. maxTokens 100000) from queueing
# minutes of work on the daemon. Tokens are capped tighter than the daemon does (ghost text is
# interactive); steps and alternatives at the daemon's own limits, so a value it would refuse is
# reported here, as a setting.
# ``confidentPrefix: true``: ghost text stops before the first token the model gave less than this
DEFAULT_CONFIDENT_PREFIX = 0.5


@dataclass(frozen=True)
class DaemonSettings:
    """Where the daemon is and whether the server may start one."""

    model: str | None = None  # None: the daemon's configured default
    socket: str | None = None  # None: the default socket path
    auto_start: bool = True
    # A daemon on another machine (never started from here), the token it demands (or a file holding
    # it) and the certificate to check its HTTPS against (runtime/api/remote.py).
    url: str | None = None  # None: $DIFFGEMMA_URL, else the local daemon
    token: str | None = None
    token_file: str | None = None
    ca_cert: str | None = None


@dataclass(frozen=True)
class CompletionSettings:
    """How ghost text is asked for."""

    max_tokens: int | None = None  # None: the daemon decides
    steps: int | None = None  # None: the checkpoint's generation config
    debounce_ms: int = 75
    context_chars: int = config.DEFAULT_CONTEXT_CHARS
    cross_file: bool = True
    # language id -> enabled; "*" is the default for languages not named
    enable: Mapping[str, bool] = field(default_factory=lambda: {"*": True})
    alternatives: int = 1  # inline items per request (distinct candidates, one batch)
    # cut ghost text at the first token under this confidence (None: show it all)
    confident_prefix: float | None = None

    def enabled_for(self, language: str | None) -> bool:
        if language and language in self.enable:
            return self.enable[language]
        return self.enable.get("*", True)


@dataclass(frozen=True)
class NextEditSettings:
    """Next-edit suggestions (``diffgemma/nextEdit``): the edit that follows the ones just made.

    On by default: a suggestion is only computed after an edit and a pause, the next keystroke
    cancels it (the daemon stops within one denoising step), it never runs while ghost text is
    showing, and the daemon proposes nothing under its confidence threshold, so an editor shows
    nothing rather than noise. Editors that never ask are not affected.
    """

    enable: bool = True
    debounce_ms: int = 400  # wait this long after the last change before asking the daemon
    threshold: float | None = None  # None: the daemon's default confidence threshold


@dataclass(frozen=True)
class Settings:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    next_edit: NextEditSettings = field(default_factory=NextEditSettings)


@dataclass(frozen=True)
class ParsedSettings:
    settings: Settings
    problems: tuple[str, ...]  # one line each, shown to the user


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Reader:
    """Reads checked values out of one raw mapping and remembers what was wrong."""

    def __init__(self, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.raw = raw
        self.prefix = prefix  # "nextEdit." for the keys of a nested group
        self.problems: list[str] = []
        self.seen: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{SECTION}.{self.prefix}{key}"

    def _get(self, key: str) -> tuple[bool, Any]:
        self.seen.add(key)
        if key not in self.raw or self.raw[key] is None:
            return False, None
        return True, self.raw[key]

    def optional_str(self, key: str) -> str | None:
        present, value = self._get(key)
        if not present:
            return None
        if not isinstance(value, str):
            self.problems.append(f"{self._name(key)} must be a string (got {value!r}); using the default")
            return None
        return value.strip() or None

    def socket(self, key: str) -> str | None:
        value = self.optional_str(key)
        if looks_like_url(value):
            self.problems.append(f"{SECTION}.{key} is a Unix socket path, not a URL ({value}); "
                                 f"set {SECTION}.url instead; using the default socket")
            return None
        return value

    def url(self, key: str) -> str | None:
        value = self.optional_str(key)
        if value is None:
            return None
        try:
            return normalize_url(value, f"{SECTION}.{key}")
        except InvalidValue as exc:
            self.problems.append(f"{exc}; using the local daemon")
            return None

    def boolean(self, key: str, default: bool) -> bool:
        present, value = self._get(key)
        if not present:
            return default
        if not isinstance(value, bool):
            self.problems.append(f"{self._name(key)} must be true or false (got {value!r}); using {default}")
            return default
        return value

    def optional_int(self, key: str, low: int, high: int) -> int | None:
        present, value = self._get(key)
        if not present:
            return None
        if not _is_int(value) or not low <= value <= high:
            self.problems.append(
                f"{self._name(key)} must be an integer from {low} to {high} (got {value!r}); using the default"
            )
            return None
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.optional_int(key, low, high)
        return default if value is None else value

    def threshold(self, key: str, when_true: float) -> float | None:
        """Off (false), on at ``when_true`` (true), or a probability in (0, 1]."""
        present, value = self._get(key)
        if not present or value is False:
            return None
        if value is True:
            return when_true
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
            return float(value)
        self.problems.append(f"{self._name(key)} must be true, false or a number in (0, 1] (got {value!r}); off")
        return None

    def optional_number(self, key: str, low: float, high: float) -> float | None:
        present, value = self._get(key)
        if not present:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.problems.append(f"{self._name(key)} must be a number from {low:g} to {high:g} (got {value!r}); "
                                 "using the default")
            return None
        return float(value)

    def unknown(self) -> None:
        extra = sorted(str(key) for key in self.raw if key not in self.seen)
        if extra:
            names = ", ".join(self.prefix + key for key in extra)
            self.problems.append(f"unknown {SECTION} settings ignored: {names}")

    def enable(self, key: str) -> dict[str, bool]:
        present, value = self._get(key)
        if not present:
            return {"*": True}
        if isinstance(value, bool):
            return {"*": value}
        if not isinstance(value, Mapping):
            self.problems.append(
                f'{self._name(key)} must be true/false or a map like {{"python": true, "*": false}} '
                f"(got {value!r}); enabling every language"
            )
            return {"*": True}
        result: dict[str, bool] = {"*": True}
        for language, flag in value.items():
            if not isinstance(language, str) or not isinstance(flag, bool):
                self.problems.append(f"{self._name(key)}.{language} must be true or false (got {flag!r}); ignored")
                continue
            result[language] = flag
        return result


def parse_settings(raw: Any) -> ParsedSettings:
    """Parse a settings payload (flat, or nested under ``"diffgemma"``); never raises."""
    if raw is None:
        return ParsedSettings(Settings(), ())
    if isinstance(raw, Mapping) and isinstance(raw.get(SECTION), Mapping):
        raw = raw[SECTION]
    if not isinstance(raw, Mapping):
        return ParsedSettings(
            Settings(),
            (f"{SECTION} settings must be a JSON object (got {type(raw).__name__}); using defaults",),
        )
    reader = _Reader(raw)
    daemon = DaemonSettings(
        model=reader.optional_str("model"),
        socket=reader.socket("socket"),
        auto_start=reader.boolean("autoStart", True),
        url=reader.url("url"),
        token=reader.optional_str("token"),
        token_file=reader.optional_str("tokenFile"),
        ca_cert=reader.optional_str("caCert"),
    )
    defaults = CompletionSettings()
    completion = CompletionSettings(
        max_tokens=reader.optional_int("maxTokens", 1, config.LSP_MAX_TOKENS_LIMIT),
        steps=reader.optional_int("steps", 1, config.MAX_STEPS),
        debounce_ms=reader.integer("debounceMs", defaults.debounce_ms, 0, config.LSP_DEBOUNCE_LIMIT_MS),
        context_chars=reader.integer(
            "contextChars", defaults.context_chars, config.LSP_CONTEXT_CHARS_MIN, config.LSP_CONTEXT_CHARS_LIMIT
        ),
        cross_file=reader.boolean("crossFile", defaults.cross_file),
        enable=reader.enable("enable"),
        alternatives=reader.integer("alternatives", defaults.alternatives, 1, config.MAX_ALTERNATIVES),
        confident_prefix=reader.threshold("confidentPrefix", DEFAULT_CONFIDENT_PREFIX),
    )
    next_edit = _next_edit(reader)
    reader.unknown()
    settings = Settings(daemon=daemon, completion=completion, next_edit=next_edit)
    return ParsedSettings(settings, tuple(reader.problems))


def _next_edit(reader: _Reader) -> NextEditSettings:
    """``nextEdit``: true/false, or {enable, debounceMs, threshold} (VS Code's diffgemma.nextEdit.*)."""
    defaults = NextEditSettings()
    present, value = reader._get("nextEdit")
    if not present:
        return defaults
    if isinstance(value, bool):
        return NextEditSettings(enable=value)
    if not isinstance(value, Mapping):
        reader.problems.append(f"{SECTION}.nextEdit must be true/false or an object like {{\"enable\": true}} "
                               f"(got {value!r}); using the defaults")
        return defaults
    inner = _Reader(value, prefix="nextEdit.")
    parsed = NextEditSettings(
        enable=inner.boolean("enable", defaults.enable),
        debounce_ms=inner.integer("debounceMs", defaults.debounce_ms, 0, config.LSP_DEBOUNCE_LIMIT_MS),
        threshold=inner.optional_number("threshold", 0.0, 1.0),
    )
    inner.unknown()
    reader.problems.extend(inner.problems)
    return parsed


def settings_to_json(settings: Settings) -> dict[str, Any]:
    """The flat camelCase form (what editors send); parse_settings(settings_to_json(s)) == s."""
    d, c, n = settings.daemon, settings.completion, settings.next_edit
    return {
        "model": d.model,
        "socket": d.socket,
        "autoStart": d.auto_start,
        "url": d.url,
        "token": d.token,
        "tokenFile": d.token_file,
        "caCert": d.ca_cert,
        "maxTokens": c.max_tokens,
        "steps": c.steps,
        "debounceMs": c.debounce_ms,
        "contextChars": c.context_chars,
        "crossFile": c.cross_file,
        "enable": dict(c.enable),
        "alternatives": c.alternatives,
        "confidentPrefix": c.confident_prefix if c.confident_prefix is not None else False,
        "nextEdit": {"enable": n.enable, "debounceMs": n.debounce_ms, "threshold": n.threshold},
    }


__all__ = [
    "SECTION",
    "CompletionSettings",
    "DaemonSettings",
    "NextEditSettings",
    "ParsedSettings",
    "Settings",
    "parse_settings",
    "settings_to_json",
]
