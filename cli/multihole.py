"""Several markers in one buffer: one request with every hole, one answer per hole.

The context around the holes is cut like a single hole's: the window before the first marker
and the window after the last one; the text between markers goes to the daemon whole (the
daemon decides which holes share a canvas). The filled buffer is written or printed once, so
``--apply`` changes the file for all the holes at once or not at all.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgemma.cli import options as opt
from diffgemma.cli.errors import OutOfRange
from diffgemma.runtime.api.config import MAX_HOLES

if TYPE_CHECKING:
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
                  *, refine: bool, confidence: bool, workspace: SnippetSource | None = None) -> InfillRequest:
    """One request for every hole: the window before the first, the text between, the window after
    the last."""
    from diffgemma.cli.plumbing import buffer, sampling
    from diffgemma.runtime.api import request_builder

    whole = holes.filled([""] * holes.count)
    offsets = [start for start, _end in holes.offsets([""] * holes.count)]
    return request_builder.holes_request(buffer(settings, whole, path, language, workspace), offsets,
                                         settings.context_chars, sampling(settings), refine=refine,
                                         confidence=confidence)


def hole_texts(result: Result, count: int) -> list[str]:
    from diffgemma.cli.errors import RequestFailed

    texts = [h.get("text", "") for h in result.holes]
    if len(texts) != count or not all(isinstance(t, str) for t in texts):
        raise RequestFailed(f"the daemon answered {len(texts)} holes for {count}")
    return texts


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
        entries.append(entry)
    payload = {"holes": entries, "timings": result.timings, "finish_reason": result.finish_reason,
               "model": result.model, "path": path, "applied": applied, "backup": str(backup) if backup else None}
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()
