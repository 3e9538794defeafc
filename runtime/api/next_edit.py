"""The next-edit wire (torch-free): ``POST /v1/next-edit`` asks where the edit that follows the
recent ones goes and what it is.

The request carries the document (or a window of it: ``first_line`` says which document line
``text`` starts at), the cursor and the recent edits, each a path and a unified diff, newest last.
The answer proposes line-range edits: document lines [start_line, end_line) (0-based, end
exclusive) are replaced by ``text``, each with the model's confidence in its changed tokens, and
``next_line``, where the following edit is likely to be. Nothing is proposed under ``threshold``;
``reason`` then says why in one line.

Lines and columns count characters (code points) and are 0-based, as in the document's own lines
(``text`` split at "\\n"); the language server converts LSP positions before asking. A cursor past
the text is taken at the nearest position in it (the end of its line, or of the last line), as
editors' positions can be a keystroke stale.

As every request type, each field's checker is also its JSON Schema (runtime.api.checks), and the
answer and its stream lines are types: /openapi.json is generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, NotRequired

from typing_extensions import TypedDict

from diffgemma.runtime.api import checks
from diffgemma.runtime.api.checks import DESCRIBERS, Checker, ProtocolError, Schema, nullable, type_name
from diffgemma.runtime.api.config import (
    DEFAULT_NEXT_EDIT_THRESHOLD,
    MAX_LINE_NUMBER,
    MAX_NEXT_EDIT_DIFF_CHARS,
    MAX_NEXT_EDITS,
)
from diffgemma.runtime.api.request_types import _CodeRequest
from diffgemma.runtime.api.results import DraftLine, FinishReason, Result

__all__ = ["Cursor", "EditWindow", "LineEdit", "NextEditDraftLine", "NextEditReply", "NextEditRequest",
           "NextEditResult", "ProposedEdit", "RecentEdit", "keep_recent_edits"]

_LINE: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_LINE_NUMBER}


@dataclass(frozen=True)
class Cursor:
    """A position in the document: 0-based line (document lines, ``first_line`` included) and column."""

    line: int
    col: int


@dataclass(frozen=True)
class RecentEdit:
    """An edit the user just made: the file and its unified diff (``git diff`` style hunks)."""

    path: str
    diff: str


def _cursor_schema() -> Schema:
    return {"type": "object", "additionalProperties": False, "required": ["line", "col"],
            "properties": {"line": _LINE, "col": _LINE}}


def _cursor(name: str, value: Any) -> Cursor:
    if isinstance(value, Cursor):
        value = {"line": value.line, "col": value.col}
    checks.fields(name, value, ("line", "col"))
    line = checks.integer(f"{name}.line", value["line"], low=0, high=MAX_LINE_NUMBER, optional=False)
    col = checks.integer(f"{name}.col", value["col"], low=0, high=MAX_LINE_NUMBER, optional=False)
    return Cursor(line=line, col=col)

DESCRIBERS[_cursor] = _cursor_schema


def _edits_schema() -> Schema:
    item = {"type": "object", "additionalProperties": False, "required": ["path", "diff"],
            "properties": {"path": {"type": "string", "maxLength": 4096}, "diff": {"type": "string"}}}
    return nullable({"type": "array", "items": item})


def _edits(name: str, value: Any) -> list[RecentEdit]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"{name} must be an array of {{path, diff}} objects (got {type_name(value)})")
    out: list[RecentEdit] = []
    for i, item in enumerate(value):
        if not isinstance(item, RecentEdit):
            item = RecentEdit(**checks.fields(f"{name}[{i}]", item, ("path", "diff"), strings=True))
            if len(item.path) > 4096:
                raise ProtocolError(f"{name}[{i}].path is longer than 4096 characters")
        out.append(item)
    return keep_recent_edits(out)

DESCRIBERS[_edits] = _edits_schema


def keep_recent_edits(edits: list[RecentEdit]) -> list[RecentEdit]:
    """The newest edits (the list's end) within MAX_NEXT_EDITS and MAX_NEXT_EDIT_DIFF_CHARS.

    Editors keep a ring of recent edits and send it whole; what does not fit is the oldest part,
    so it is dropped here rather than refused (as the extra files are)."""
    kept: list[RecentEdit] = []
    chars = 0
    for item in reversed(edits):
        size = len(item.diff) + len(item.path)
        if len(kept) >= MAX_NEXT_EDITS or chars + size > MAX_NEXT_EDIT_DIFF_CHARS:
            break
        kept.append(item)
        chars += size
    kept.reverse()
    return kept


@dataclass(kw_only=True)
class NextEditRequest(_CodeRequest):
    """Propose the edit that follows ``edits`` in ``text`` around ``cursor``."""

    text: str
    cursor: Cursor
    first_line: int = 0  # the document line ``text`` starts at (a window of a long document)
    edits: list[RecentEdit] = field(default_factory=list)  # newest last
    threshold: float | None = None  # nothing under this confidence is proposed (default in config)

    kind: ClassVar[str] = "next-edit"
    _required: ClassVar[tuple[str, ...]] = ("text", "cursor")
    _checks: ClassVar[dict[str, Checker]] = {
        **_CodeRequest._checks,
        "text": checks.string,
        "cursor": _cursor,
        "first_line": partial(checks.integer, low=0, high=MAX_LINE_NUMBER, optional=False),
        "edits": _edits,
        "threshold": partial(checks.number, low=0.0, high=1.0),
    }
    _docs: ClassVar[dict[str, str]] = {
        **_CodeRequest._docs,
        "text": "The document, or a window of it starting at first_line.",
        "cursor": "0-based document line and column (characters); past the text: its nearest position.",
        "first_line": "The document line text starts at (default 0).",
        "edits": f"Recent edits, newest last, each a path and a unified diff (the newest {MAX_NEXT_EDITS} within "
                 f"{MAX_NEXT_EDIT_DIFF_CHARS} characters are used).",
        "threshold": "Nothing is proposed unless its changed tokens' confidence is above this "
                     f"(default {DEFAULT_NEXT_EDIT_THRESHOLD}).",
    }

    @classmethod
    def from_json(cls, data: Any) -> NextEditRequest:
        req = super().from_json(data)
        # a cursor past the text (a stale position) is taken at the nearest position in it
        lines = req.text.split("\n")
        row = min(max(req.cursor.line - req.first_line, 0), len(lines) - 1)
        col = min(req.cursor.col, len(lines[row]))
        if (row + req.first_line, col) != (req.cursor.line, req.cursor.col):
            req.cursor = Cursor(line=row + req.first_line, col=col)
        return req

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["cursor"] = {"line": self.cursor.line, "col": self.cursor.col}
        if self.edits:
            out["edits"] = [{"path": e.path, "diff": e.diff} for e in self.edits]
        else:
            out.pop("edits", None)
        if not self.first_line:
            out.pop("first_line", None)
        return out

    @property
    def resolved_threshold(self) -> float:
        return DEFAULT_NEXT_EDIT_THRESHOLD if self.threshold is None else self.threshold


@dataclass(frozen=True)
class LineEdit:
    """Document lines [start_line, end_line) replaced by ``text`` (whole lines, each with its
    "\\n"; empty: the lines are deleted; start_line == end_line: ``text`` is inserted there)."""

    start_line: int
    end_line: int
    text: str
    confidence: float  # the model's probability for the changed tokens (the weakest one)

    def to_json(self) -> ProposedEdit:
        return {"start_line": self.start_line, "end_line": self.end_line, "text": self.text,
                "confidence": round(self.confidence, 4)}

    @classmethod
    def from_json(cls, data: Any) -> LineEdit:
        if not isinstance(data, dict):
            raise ProtocolError(f"an edit must be a JSON object (got {type_name(data)})")
        try:
            start, end, text, conf = data["start_line"], data["end_line"], data["text"], data["confidence"]
        except KeyError as exc:
            raise ProtocolError(f"an edit is missing {exc.args[0]!r}") from None
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
        if not whole or not 0 <= start <= end or not isinstance(text, str) or not isinstance(conf, int | float):
            raise ProtocolError("an edit has fields of the wrong type")
        return cls(start_line=start, end_line=end, text=text, confidence=float(conf))


@dataclass
class NextEditResult(Result):
    """The answer to a next-edit request (also its ``{"type": "result"}`` stream line).

    ``text`` is the rewritten window as the proposed edits leave it (lines ``window`` of the
    document; empty when the window was not rewritten)."""

    edits: list[LineEdit] = field(default_factory=list)  # in document order, not overlapping
    next_line: int | None = None  # where the next edit is likely to be (document line)
    threshold: float = DEFAULT_NEXT_EDIT_THRESHOLD
    reason: str | None = None  # one line: why nothing is proposed (None when something is)
    window: EditWindow | None = None  # the lines the model rewrote

    def to_json(self) -> dict[str, Any]:
        return dict(self.reply())

    def reply(self) -> NextEditReply:
        """The answer as it goes on the wire (and into /openapi.json)."""
        data: NextEditReply = {
            "edits": [e.to_json() for e in self.edits], "next_line": self.next_line, "threshold": self.threshold,
            "reason": self.reason, "text": self.text, "finish_reason": self.finish_reason, "timings": self.timings,
            "id": self.id, "model": self.model}
        if self.window is not None:
            data["window"] = {"start_line": self.window["start_line"], "end_line": self.window["end_line"]}
        return data

    @classmethod
    def from_json(cls, data: Any) -> NextEditResult:
        # Lenient on extra keys, as Result is; a cancelled job's plain answer has no edits.
        base = Result.from_json(data)
        raw_edits = data.get("edits") or []
        if not isinstance(raw_edits, list):
            raise ProtocolError("result has fields of the wrong type")
        next_line, threshold, reason = data.get("next_line"), data.get("threshold"), data.get("reason")
        if next_line is not None and (not isinstance(next_line, int) or isinstance(next_line, bool)):
            raise ProtocolError("result has fields of the wrong type")
        if reason is not None and not isinstance(reason, str):
            raise ProtocolError("result has fields of the wrong type")
        window = data.get("window")
        if window is not None and not (isinstance(window, dict) and all(
                isinstance(window.get(k), int) for k in ("start_line", "end_line"))):
            raise ProtocolError("result has fields of the wrong type")
        return cls(text=base.text, finish_reason=base.finish_reason, timings=base.timings, id=base.id,
                   model=base.model, edits=[LineEdit.from_json(e) for e in raw_edits], next_line=next_line,
                   threshold=float(threshold) if isinstance(threshold, int | float) else DEFAULT_NEXT_EDIT_THRESHOLD,
                   reason=reason, window=None if window is None else {"start_line": window["start_line"],
                                                                      "end_line": window["end_line"]})



# --- the answer on the wire (the types /openapi.json shows) ----------------------------------------

class EditWindow(TypedDict):
    """Document lines [start_line, end_line) the model rewrote."""

    start_line: int
    end_line: int


class ProposedEdit(TypedDict):
    """A `LineEdit` on the wire: document lines [start_line, end_line) replaced by ``text``, with the
    model's probability for its weakest changed token."""

    start_line: int
    end_line: int
    text: str
    confidence: float


class NextEditReply(TypedDict):
    """The answer to ``POST /v1/next-edit`` (with ``"type": "result"``, its stream's last line): the edits
    proposed (none under ``threshold``: ``reason`` says why in one line), where the next edit is likely
    to be, and ``text``, the rewritten ``window`` as the proposed edits leave it (empty when nothing is
    proposed; a cancelled request has no window)."""

    edits: list[ProposedEdit]
    next_line: int | None
    threshold: float
    reason: str | None
    text: str
    finish_reason: FinishReason
    timings: dict[str, float]
    id: str
    model: str
    window: NotRequired[EditWindow]


class NextEditDraftLine(DraftLine):
    """A next-edit stream line: the window's rewrite so far, and the edits it would make."""

    window: NotRequired[EditWindow]
    edits: NotRequired[list[ProposedEdit]]
