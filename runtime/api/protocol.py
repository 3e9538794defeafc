"""The daemon's wire protocol (torch-free): what the front ends and the daemon import.

Shared by the server (which validates every body with ``from_json``) and the clients (which build
requests and read results). Validation is strict on purpose: unknown fields, wrong types and
absurd values are refused with a one-line ``ProtocolError`` so a typo never silently changes a
request's meaning.

The pieces live in modules named for what they hold: ``checks`` (field checkers, ExtraFile),
``request_types`` (the request dataclasses, whose checkers are also their JSON Schemas), ``results``
(Result, the stream lines and the other answers); the limits are runtime.api.config's.
"""

from __future__ import annotations

from diffgemma.runtime.api.checks import SAMPLING_OPTIONS, Checker, ExtraFile, ProtocolError, keep_recent
from diffgemma.runtime.api.config import (
    MAX_ALTERNATIVES,
    MAX_EXTRA_CHARS,
    MAX_EXTRA_FILES,
    MAX_HOLES,
    MAX_ID_LENGTH,
    MAX_KEEP_ALIVE_S,
    MAX_STEPS,
    MAX_TIME_LIMIT_MS,
    MAX_TOKENS_LIMIT,
)
from diffgemma.runtime.api.next_edit import Cursor, LineEdit, NextEditRequest, NextEditResult, RecentEdit
from diffgemma.runtime.api.request_types import (
    CHAT_ROLES,
    CancelRequest,
    ChatRequest,
    EditRequest,
    InfillRequest,
    TokenizeRequest,
    chat_messages,
)
from diffgemma.runtime.api.results import FINISH_REASONS, Result, draft_line, error_line, result_line

__all__ = [
    "CHAT_ROLES",
    "FINISH_REASONS",
    "MAX_ALTERNATIVES",
    "MAX_EXTRA_CHARS",
    "MAX_EXTRA_FILES",
    "MAX_HOLES",
    "MAX_ID_LENGTH",
    "MAX_KEEP_ALIVE_S",
    "MAX_STEPS",
    "MAX_TIME_LIMIT_MS",
    "MAX_TOKENS_LIMIT",
    "SAMPLING_OPTIONS",
    "CancelRequest",
    "ChatRequest",
    "Checker",
    "Cursor",
    "EditRequest",
    "ExtraFile",
    "InfillRequest",
    "LineEdit",
    "NextEditRequest",
    "NextEditResult",
    "ProtocolError",
    "RecentEdit",
    "Result",
    "TokenizeRequest",
    "chat_messages",
    "draft_line",
    "error_line",
    "keep_recent",
    "result_line",
]
