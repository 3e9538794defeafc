"""Several markers in one buffer: one request with every hole, one answer per hole.

The context around the holes is cut like a single hole's: the window before the first marker
and the window after the last one; the text between markers goes to the daemon whole (the
daemon decides which holes share a canvas). The filled buffer is written or printed once, so
``--apply`` changes the file for all the holes at once or not at all. On a terminal the live
view shows the buffer with every hole's draft. With ``--alternatives N`` the daemon answers up to
N distinct sets of fills (set 0 is the answer, the one written); ``--json`` lists each hole's
fill in every set, aligned by index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgemma.cli import options as opt
from diffgemma.cli.errors import OutOfRange
from diffgemma.runtime.api.config import MAX_HOLES

if TYPE_CHECKING:
    from diffgemma.cli.plumbing import Asks
    from diffgemma.runtime.api.protocol import InfillRequest, Result
    from diffgemma.runtime.api.request_builder import SnippetSource


@dataclass
class Holes:
    """A buffer split at its markers: ``pieces`` is the text around the holes (one more than holes)."""

    pieces: list[str]

    @property
    def count(self) -> int:
        return len(self.pieces) - 1

    def offsets(self, fills: list[str]) -> list[tuple[int, int]]:
        """Where each fill sits in the filled buffer (start, end offsets)."""
        out, pos = [], len(self.pieces[0])
        for fill, after in zip(fills, self.pieces[1:], strict=True):
            out.append((pos, pos + len(fill)))
            pos += len(fill) + len(after)
        return out

    def filled(self, fills: list[str]) -> str:
        return self.pieces[0] + "".join(f + p for f, p in zip(fills, self.pieces[1:], strict=True))


def split_markers(text: str, marker: str, what: str) -> Holes | None:
    """The buffer split at its markers, or None when it has exactly one (the single-hole path)."""
    count = text.count(marker)
    if count == 0:
        raise OutOfRange(f"{what} has no {marker} marker: put one where the text should go")
    if count == 1:
        return None
    if count > MAX_HOLES:  # more is likelier a marker that occurs in the code itself
        raise OutOfRange(f"{what} has {count} {marker} markers: at most {MAX_HOLES} holes at once")
    return Holes(text.split(marker))


def holes_request(settings: opt.Settings, holes: Holes, language: str | None, path: Path | None,
                  *, refine: bool, confidence: bool, workspace: SnippetSource | None = None,
                  alternatives: int | None = None) -> InfillRequest:
    """One request for every hole: the window before the first, the text between, the window after
    the last."""
    from diffgemma.cli.plumbing import buffer, sampling
    from diffgemma.runtime.api import request_builder

    whole = holes.filled([""] * holes.count)
    offsets = [start for start, _end in holes.offsets([""] * holes.count)]
    return request_builder.holes_request(buffer(settings, whole, path, language, workspace), offsets,
                                         settings.context_chars, sampling(settings), alternatives=alternatives,
                                         refine=refine, confidence=confidence)


def fill_holes(settings: opt.Settings, holes: Holes, language: str | None, path: Path | None, asks: Asks,
               title: str) -> Result:
    """Every hole in one request; on a terminal (and not --quiet) the live view draws the buffer
    with each hole's draft as the daemon streams them."""
    from diffgemma.cli.live import holes_view
    from diffgemma.cli.plumbing import connect, finished

    req = holes_request(settings, holes, language, path, refine=asks.refine, confidence=asks.confidence,
                        alternatives=asks.alternatives)
    with connect(settings) as client:
        view = holes_view(not settings.quiet, req.pieces(), title)
        if view is not None:
            req = dataclasses.replace(req, stream=True, confidence=True)
        with view if view is not None else contextlib.nullcontext():
            result = client.infill(req, on_draft=view.update if view is not None else None)
    return finished(result)


def hole_texts(result: Result, count: int) -> list[str]:
    from diffgemma.cli.errors import RequestFailed

    texts = [h.get("text", "") for h in result.holes]
    if len(texts) != count or not all(isinstance(t, str) for t in texts):
        raise RequestFailed(f"the daemon answered {len(texts)} holes for {count}")
    hole_sets(result)  # alternatives, when there are any, must line up
    return texts


def hole_sets(result: Result) -> list[list[str]]:
    """The distinct sets of fills (set 0 is the answer); [] without alternatives."""
    from diffgemma.cli.errors import RequestFailed
    from diffgemma.runtime.api.checks import ProtocolError
    from diffgemma.runtime.api.results import alternative_sets

    try:
        return alternative_sets(result)
    except ProtocolError as exc:
        raise RequestFailed(f"the daemon's answer is malformed: {exc}") from None


def print_alternatives(result: Result) -> None:
    """The sets after the answer on stderr, as single-hole alternatives are shown."""
    for k, fills in enumerate(hole_sets(result)[1:], start=2):
        for i, text in enumerate(fills, start=1):
            print(f"diffgemma: alternative {k}, hole {i}:\n{text}", file=sys.stderr, flush=True)


def print_json(result: Result, holes: Holes, fills: list[str], *, path: str | None, applied: bool,
               backup: Path | None) -> None:
    from diffgemma.cli import fileio

    new_text = holes.filled(fills)
    entries = []
    for i, (start, end) in enumerate(holes.offsets(fills)):
        entry: dict[str, Any] = {
            "text": fills[i],
            "range": {"start": fileio.offset_position(new_text, start).as_json(),
                      "end": fileio.offset_position(new_text, end).as_json()},
        }
        tokens = result.holes[i].get("tokens")
        if tokens is not None:
            entry["tokens"] = tokens
        alternatives = result.holes[i].get("alternatives")
        if alternatives is not None:  # index k: this hole's fill in set k (0: the answer)
            entry["alternatives"] = alternatives
        entries.append(entry)
    payload = {"holes": entries, "timings": result.timings, "finish_reason": result.finish_reason,
               "model": result.model, "path": path, "applied": applied, "backup": str(backup) if backup else None}
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()
