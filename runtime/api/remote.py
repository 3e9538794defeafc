"""Reaching a daemon on another machine: its URL, the token to send, the TLS certificate check (torch-free).

A remote daemon is named by a URL, ``http(s)://HOST:PORT`` (`--url`, $DIFFGEMMA_URL, ``url`` in
config.toml, the language server's ``url`` setting). The front ends never start one there: a URL
that does not answer is a one-line error that names it.

The token sent is the first of: `--token` (the language server's ``token``), the file `--token-file`
names ($DIFFGEMMA_TOKEN_FILE, ``tokenFile``; refused when other users may read it), $DIFFGEMMA_TOKEN,
and the state directory's token file (what a TCP daemon of your own, `daemon start --port`, demands).

HTTPS certificates are checked against the system's certificate store, or against `--ca-cert`
($DIFFGEMMA_CA_CERT, ``caCert``): the certificate of the authority that signed the server's, or the
server's own (a self-signed one, say).

A Unix socket and a URL differ in more than the address (a socket's daemon is started when absent
and needs no token), so a URL given where a socket path goes is refused with a pointer to `--url`,
never taken as a file name (which would start a second local daemon at a path like ``http:/host``).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from diffgemma.runtime.api import config
from diffgemma.runtime.api.errors import InvalidValue
from diffgemma.runtime.api.token_file import read_token

if TYPE_CHECKING:
    import ssl  # loaded when a certificate is checked, not when a command's options are read

# A scheme and a slash: what a URL starts with and no socket path does (a Path collapses "//").
# Callers on a hot path match it themselves and call refuse_url_socket only on a match.
URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def looks_like_url(value: object) -> bool:
    return value is not None and bool(URL_LIKE.match(str(value)))


def refuse_url_socket(value: object, where: str = "--socket", advice: str | None = None) -> None:
    """InvalidValue when a socket path is a URL; the message ends with ``advice`` (by default: use --url)."""
    if not looks_like_url(value):
        return
    text = str(value)
    if isinstance(value, Path):  # a Path made "http://h" into "http:/h": show what was typed
        scheme, _, rest = text.partition(":/")
        text = f"{scheme}://{rest}"
    raise InvalidValue(f"{where} takes a Unix socket path, not a URL ({_shown(text)}); "
                       f"{advice or f'to reach a daemon over TCP use --url {_shown(text)}'}")


def normalize_url(text: str, where: str = "--url") -> str:
    """``http(s)://HOST[:PORT][/PATH]`` without a trailing slash; InvalidValue for anything else."""
    problem = f"{where} must look like https://HOST:PORT (got {_shown(text)})"
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        raise InvalidValue(problem) from None
    if (parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or parts.username is not None):
        raise InvalidValue(problem)
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), "", ""))


def read_token_file(path: str | Path) -> str:
    """The token a file holds (its first line); InvalidValue when it is unreadable, empty, or open
    to other users (a secret must be mode 0600, as ssh demands of its keys)."""
    shown = Path(path).expanduser()
    try:
        with open(shown, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_ISREG(mode) and mode & 0o077:
                raise InvalidValue(f"token file {shown} is open to other users (mode {stat.S_IMODE(mode):04o}); "
                                   f"run `chmod 600 {shown}`")
            raw = handle.read(4096)
    except OSError as exc:
        raise InvalidValue(f"cannot read token file {shown}: {exc.strerror or type(exc).__name__}") from None
    lines = raw.decode("utf-8", "replace").split()
    if not lines:
        raise InvalidValue(f"token file {shown} is empty")
    return lines[0]


def resolve_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The bearer token to send a TCP daemon (the order is the module's docstring's)."""
    if token and token.strip():
        return token.strip()
    path = token_file or config.env(config.ENV_TOKEN_FILE)
    if path:
        return read_token_file(path)
    return read_token()  # $DIFFGEMMA_TOKEN, else the state directory's token file


def tls_context(ca_cert: str | Path | None = None, *, check_hostname: bool = True) -> ssl.SSLContext:
    """How an HTTPS daemon's certificate is checked: against ``ca_cert`` when given, else the system's
    store. A certificate in ``ca_cert`` is trusted as it is, so the server's own certificate works
    (Python 3.13 does this by default). ``check_hostname=False`` is for a daemon of our own reached
    by another name than its certificate's (loopback), checked against its own certificate."""
    import ssl

    try:
        context = ssl.create_default_context(cafile=str(Path(ca_cert).expanduser()) if ca_cert else None)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise InvalidValue(f"cannot use the CA certificate {ca_cert}: {reason}") from None
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = check_hostname
    return context


@dataclass(frozen=True)
class Remote:
    """A daemon on another machine, as the front ends reach it."""

    url: str
    token: str | None = None
    ca_cert: str | None = None

    @classmethod
    def resolve(cls, url: str, token: str | None = None, token_file: str | Path | None = None,
                ca_cert: str | Path | None = None) -> Remote:
        """Check the URL, find the token and the CA certificate; InvalidValue with one line."""
        ca = str(Path(ca_cert).expanduser()) if ca_cert else config.env(config.ENV_CA_CERT)
        if ca is not None:
            tls_context(ca)  # an unreadable certificate is a setting's error, said now
        return cls(url=normalize_url(url), token=resolve_token(token, token_file), ca_cert=ca)

    def verify(self) -> ssl.SSLContext | None:
        """The certificate check of an HTTPS URL (None for plain HTTP)."""
        return tls_context(self.ca_cert) if self.url.startswith("https:") else None


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:76] + "…"
