"""The bearer token a TCP daemon demands: $DIFFGEMMA_TOKEN, else a 0600 file in the state directory.

The daemon creates the file on its first TCP start; clients read it to authenticate.
"""

from __future__ import annotations

import os
import secrets

from diffgemma.runtime.api import config, paths


def read_token() -> str | None:
    """The token a client sends over TCP, or None when there is none yet."""
    token = config.env(config.ENV_TOKEN)
    if token:
        return token
    try:
        return paths.token_path().read_text().strip() or None
    except OSError:
        return None


def load_or_create_token() -> str:
    """The token the daemon demands: $DIFFGEMMA_TOKEN, else the token file (created on first use)."""
    token = config.env(config.ENV_TOKEN)
    if token:
        return token
    path = paths.token_path()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if (path.stat().st_mode & 0o077) != 0:
            os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
