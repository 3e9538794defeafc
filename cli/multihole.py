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

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffgemma.cli import fileio
from diffgemma.cli.errors import RequestFailed
from diffgemma.cli.options import Settings
from diffgemma.cli.plumbing import Asks, Output, buffer, run_request
from diffgemma.runtime.api import request_builder
from diffgemma.runtime.api.checks import ProtocolError
from diffgemma.runtime.api.protocol import InfillRequest, Result
from diffgemma.runtime.api.request_builder import SnippetSource
from diffgemma.runtime.api.results import alternative_sets


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


def holes_request(settings: Settings, out: Output, holes: Holes, path: Path | None, asks: Asks,
                  workspace: SnippetSource | None = None) -> InfillRequest:
    """One request for every hole: the window before the first, the text between, the window after
    the last."""
    whole = holes.filled([""] * holes.count)
    offsets = [start for start, _end in holes.offsets([""] * holes.count)]
    return request_builder.holes_request(buffer(settings, whole, path, workspace), offsets, settings.context_chars,
                                         settings.sampling, stream=out.live, alternatives=asks.alternatives,
                                         refine=asks.refine, confidence=out.confidence)


def fill_holes(settings: Settings, out: Output, holes: Holes, path: Path | None, asks: Asks, title: str,
               workspace: SnippetSource | None = None) -> Result:
    """Every hole in one request; with a live view it draws the buffer with each hole's draft as the
    daemon streams them."""
    return run_request(settings, holes_request(settings, out, holes, path, asks, workspace), title)


def hole_texts(result: Result, count: int) -> list[str]:
    texts = [h.get("text", "") for h in result.holes]
    if len(texts) != count or not all(isinstance(t, str) for t in texts):
        raise RequestFailed(f"the daemon answered {len(texts)} holes for {count}")
    hole_sets(result)  # alternatives, when there are any, must line up
    return texts


def hole_sets(result: Result) -> list[list[str]]:
    """The distinct sets of fills (set 0 is the answer); [] without alternatives."""
    try:
        return alternative_sets(result)
    except ProtocolError as exc:
        raise RequestFailed(f"the daemon's answer is malformed: {exc}") from None


def print_json(result: Result, holes: Holes, fills: list[str], *, path: str | None, applied: bool,
               backup: Path | None) -> None:
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
    if result.reason:
        payload["reason"] = result.reason
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()
