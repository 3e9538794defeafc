"""A team server's developers: the tokens file that names them, and what each of them asked for.

The tokens file (`serve --tokens-file PATH`, $DIFFGEMMA_TOKENS_FILE) holds one developer per line,
``NAME TOKEN``, separated by blanks; empty lines and lines starting with ``#`` are skipped. A name is
1-64 letters, digits and ``._@-``; a token is at least 16 printable ASCII characters without blanks
(``openssl rand -hex 32`` makes one). Like ssh with its keys, the daemon refuses a file that other
users may read or write (mode 0600 or stricter).

A request whose bearer token is in the file runs as that developer: it is counted under the name
(``developers`` in /v1/status), and its supersession key is scoped to the name, so one developer's
newer request never cancels another's (two people editing files at the same path would otherwise
supersede each other). The daemon's own token (runtime/api/token_file.py) keeps working: its
requests belong to the daemon's owner, who sees every developer's counters.

The file is read again when it changes (checked on each request: one stat) or on SIGHUP; an edit
that breaks it keeps the names that were in force, with one error in the log.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffgemma.runtime.api.daemon_config import DaemonStartError
from diffgemma.runtime.daemon.jobs import Job, Outcome

log = logging.getLogger("diffgemma.daemon")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_TOKEN_LENGTH = 16


class TokensFileError(DaemonStartError):
    """The tokens file cannot be used (unreadable, open to others, a malformed line); one line that
    never shows a token."""


# --- the file -------------------------------------------------------------------------------------


def parse_tokens(text: str, where: str) -> dict[str, bytes]:
    """name -> token from the file's text; TokensFileError names the line of the first problem."""
    table: dict[str, bytes] = {}
    owners: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            raise TokensFileError(f"{where}:{number}: expected `NAME TOKEN` ({len(fields)} fields)")
        name, token = fields
        if not NAME.fullmatch(name):
            raise TokensFileError(f"{where}:{number}: a name is 1-64 letters, digits and ._@- (got {name[:64]!r})")
        if not token.isascii() or not token.isprintable() or len(token) < MIN_TOKEN_LENGTH:
            raise TokensFileError(f"{where}:{number}: {name}'s token must be at least {MIN_TOKEN_LENGTH} "
                                  f"printable ASCII characters")
        if name in table:
            raise TokensFileError(f"{where}:{number}: {name} is named twice")
        secret = token.encode()
        if secret in owners:
            raise TokensFileError(f"{where}:{number}: {name} has the same token as {owners[secret]}")
        table[name], owners[secret] = secret, name
    return table


def read_tokens(path: Path) -> tuple[tuple[int, int, int], dict[str, bytes]]:
    """(the file's identity: inode, size, mtime; its table), refusing a file others may read."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise TokensFileError(f"tokens file {path} is not a regular file")
            if info.st_mode & 0o077:
                raise TokensFileError(f"tokens file {path} is open to other users (mode "
                                      f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")
            raw = handle.read()
    except OSError as exc:
        raise TokensFileError(f"cannot read tokens file {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokensFileError(f"tokens file {path} is not UTF-8 text") from None
    return (info.st_ino, info.st_size, info.st_mtime_ns), parse_tokens(text, str(path))


class TokensFile:
    """The developers' tokens, read again when the file changes. Used on the event loop only
    (``request_reload`` may come from a signal handler: it only sets a flag)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature, self._table = read_tokens(path)
        self._reload = False

    @property
    def names(self) -> list[str]:
        return list(self._table)

    def request_reload(self) -> None:
        """Read the file again before the next request (SIGHUP), even if it looks unchanged."""
        self._reload = True

    def identify(self, given: bytes) -> str | None:
        """The developer whose token ``given`` is, or None.

        Every entry is compared, in constant time, whatever matched before: the answer time must
        not tell a guesser how much of a token, or which developer's, was right.
        """
        self._refresh()
        found: str | None = None
        for name, token in self._table.items():
            if hmac.compare_digest(given, token) and found is None:
                found = name
        return found

    def _refresh(self) -> None:
        try:
            info = os.stat(self.path)
            signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            signature = (0, 0, 0)
        if signature == self._signature and not self._reload:
            return
        self._reload = False
        try:
            self._signature, self._table = read_tokens(self.path)
        except TokensFileError as exc:
            # Keep the names in force: a half-written edit must not lock the whole team out. The
            # broken version is remembered, so the error is logged once, not on every request.
            self._signature = signature
            log.error("%s; keeping the %d developers read before", exc, len(self._table))
            return
        log.info("tokens file %s read again: %d developers", self.path, len(self._table))


# --- who is asking ----------------------------------------------------------------------------------


@dataclass
class Caller:
    """The developer a request runs as, while it is answered."""

    name: str
    submitted: bool = False  # a job was queued for it: the job's outcome is what gets counted


# Set by the token check for the length of one request. The check is an ASGI layer and the job is
# made deep inside the route's handler, in the same task: a context variable carries the name
# between them without threading it through every route.
CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("diffgemma_caller", default=None)


@dataclass
class Usage:
    """One developer's counters, as /v1/status shows them."""

    requests: int = 0  # generation and token requests, including those refused
    completed: int = 0
    cancelled: int = 0  # by a disconnect or /v1/cancel
    superseded: int = 0  # by the same developer's newer request with the same client key
    errors: int = 0  # refused (bad request, queue full, ...) or failed
    generated_tokens: int = 0
    last_seen: str | None = None  # UTC, ISO 8601: the last request of any kind

    def finished(self, outcome: Outcome, superseded: bool) -> None:
        if not outcome.ok:
            self.errors += 1
        elif outcome.result is not None and outcome.result.finish_reason == "cancelled":
            if superseded:
                self.superseded += 1
            else:
                self.cancelled += 1
        else:
            self.completed += 1
            if outcome.result is not None:
                self.generated_tokens += int(outcome.result.timings.get("generated_tokens") or 0)


class Team:
    """The tokens file and every developer's counters (updated from the event loop and the worker)."""

    def __init__(self, tokens: TokensFile) -> None:
        self.tokens = tokens
        self._usage: dict[str, Usage] = {}
        self._lock = threading.Lock()

    def _count(self, name: str, change: Callable[[Usage], None]) -> None:
        with self._lock:
            change(self._usage.setdefault(name, Usage()))

    def seen(self, name: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._count(name, lambda usage: setattr(usage, "last_seen", stamp))

    def submitting(self, caller: Caller, job: Job) -> None:
        """Count ``job`` for ``caller`` and have its outcome counted when it finishes."""
        caller.submitted = True
        job.owner = caller.name
        answer = job.on_done

        def on_done(outcome: Outcome) -> None:
            self._count(caller.name, lambda usage: usage.finished(outcome, job.superseded))
            answer(outcome)

        job.on_done = on_done
        self._count(caller.name, _requested)

    def refused(self, name: str) -> None:
        """A request answered with an error before a job was made for it (a bad body, say)."""
        self._count(name, _refused)

    def refused_job(self, name: str) -> None:
        """A job counted by ``submitting`` that the queue refused (full, shutting down)."""
        self._count(name, _failed)

    def report(self, caller: Caller | None) -> dict[str, Any]:
        """``developer`` (who asks) and ``developers``: everyone's counters for the daemon's owner,
        one's own for a developer."""
        with self._lock:
            names = [caller.name] if caller is not None else [*self.tokens.names,
                                                              *(n for n in self._usage if n not in self.tokens.names)]
            table = {name: asdict(self._usage.get(name) or Usage()) for name in names}
        return {"developer": caller.name if caller is not None else None, "developers": table}

    async def serve_as(self, name: str, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request as developer ``name``."""
        caller = Caller(name)
        self.seen(name)

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start" and not caller.submitted:
                status = int(message.get("status", 200))
                if status >= 400 and status != 499 and scope.get("path") not in _NOT_REQUESTS:
                    self.refused(name)
            await send(message)

        reset = CALLER.set(caller)
        try:
            await app(scope, receive, counted)
        finally:
            with contextlib.suppress(ValueError):  # reset in another context: nothing to undo
                CALLER.reset(reset)


# Reading the daemon's state is not a request for work: a refused status call is not an error.
_NOT_REQUESTS = ("/v1/status", "/health", "/openapi.json", "/props", "/v1/props", "/v1/models", "/models")


def _requested(usage: Usage) -> None:
    usage.requests += 1


def _refused(usage: Usage) -> None:
    usage.requests += 1
    usage.errors += 1


def _failed(usage: Usage) -> None:
    usage.errors += 1


def team_status(team: Team | None) -> dict[str, Any]:
    """What /v1/status adds for a daemon with a tokens file (nothing without one)."""
    return team.report(CALLER.get()) if team is not None else {}


def load_team(path: Path | None) -> Team | None:
    """The team of ``--tokens-file``, or None when there is none; TokensFileError when it is unusable."""
    if path is None:
        return None
    tokens = TokensFile(Path(path).expanduser())
    if not tokens.names:
        log.warning("tokens file %s names nobody: only the daemon's own token is accepted", path)
    return Team(tokens)


__all__ = ["CALLER", "Caller", "Team", "TokensFile", "TokensFileError", "Usage", "load_team", "parse_tokens",
           "read_tokens", "team_status"]
