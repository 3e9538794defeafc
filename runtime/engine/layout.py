"""Canvas arithmetic both engines share (torch-free): which hole lengths to try, how several holes
group into canvases, the checks on a request's length and alternatives, the join clean-up of a
fill's text, and a request's timings once its canvases are done.

The local engine lays these out as tensors (`canvas`, `fill`, `holes`); the vLLM engine
(`runtime.engine.vllm`) as the seed canvases and pinned positions of its requests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from diffgemma.runtime.api import config
from diffgemma.runtime.engine.types import SettingsError, Timings


def checked_max_tokens(max_tokens: int | None, default: int) -> int:
    if max_tokens is None:
        return default
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise SettingsError("max_tokens must be an integer")
    if not 1 <= max_tokens <= config.MAX_TOKENS_LIMIT:
        raise SettingsError(f"max_tokens must be between 1 and {config.MAX_TOKENS_LIMIT} (got {max_tokens})")
    return max_tokens


def check_alternatives(alternatives: int) -> None:
    if (isinstance(alternatives, bool) or not isinstance(alternatives, int)
            or not 1 <= alternatives <= config.MAX_ALTERNATIVES):
        raise SettingsError(f"alternatives must be between 1 and {config.MAX_ALTERNATIVES} (got {alternatives!r})")


def finish_timings(timings: Timings, generated: int, t0: float) -> Timings:
    """A request's timings once its canvases are done (``t0``: its start, time.perf_counter())."""
    timings.ms_per_step = timings.ms_per_step / max(timings.steps, 1)
    timings.generated_tokens = generated
    timings.tokens_per_forward = generated / max(timings.steps, 1)
    timings.total_ms = (time.perf_counter() - t0) * 1000
    return timings


def hole_candidates(length: int, max_hole: int, suffix_len: int) -> tuple[list[int], int]:
    """Hole lengths to try in one batch on a canvas of ``length``, and how many suffix tokens
    every row holds.

    Every row holds the same number of leading suffix tokens (scored alike), so the longest
    hole leaves room for them: about a quarter of the canvas, or the whole suffix when it is
    shorter.
    """
    hold = min(suffix_len, max(1, length // 4)) if suffix_len else 0
    longest = max(1, min(max_hole, length - hold))
    grid = {max(1, round(length * f)) for f in (1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4)}
    grid = {n for n in grid if n < longest} | {longest}
    return sorted(grid), hold


def rewrite_lengths(length: int, orig: list[int], following: list[int], search: bool, room_left: int) -> list[int]:
    """Rewrite lengths to try: the selection's own length and a few around it (last canvas only)."""
    if search:
        n = len(orig)
        room = length - min(max(1, length // 4), len(following)) if following else length
        cands = sorted({max(1, min(room, m)) for m in (n, round(n * 0.75), round(n * 1.25), n - 2, n + 2)})
    else:
        cands = [max(1, len(orig))]
    return [c for c in cands if c <= room_left] or [max(1, min(len(orig), room_left))]


@dataclass
class HoleGroup:
    holes: list[int]  # hole indexes, consecutive


def plan_groups(length: int, fixed_ids: list[list[int]]) -> list[HoleGroup]:
    """Consecutive holes share a canvas (of ``length``) while the text between them is at most a
    quarter canvas and every hole in it keeps at least an eighth of the canvas of room."""
    room_min, between_max = max(2, length // 8), max(1, length // 4)
    groups: list[HoleGroup] = [HoleGroup([0])]
    n_holes = len(fixed_ids) - 1
    for hole in range(1, n_holes):
        group = groups[-1]
        between = [len(fixed_ids[h + 1]) for h in group.holes]  # text after each hole so far
        tail = min(len(fixed_ids[hole + 1]), between_max)
        fits = sum(between) + (len(group.holes) + 1) * room_min + tail <= length
        if between[-1] <= between_max and fits:
            group.holes.append(hole)
        else:
            groups.append(HoleGroup([hole]))
    return groups


def sets(group_sets: Sequence[Sequence[tuple[str, ...]]], n: int) -> list[tuple[str, ...]]:
    """The request's distinct sets of fills, set 0 the answer: set k joins every group's k-th
    alternative (a group with fewer distinct ones than k gives its answer)."""
    out: dict[tuple[str, ...], None] = {}
    for k in range(n):
        out.setdefault(tuple(t for g in group_sets for t in (g[k] if k < len(g) else g[0])), None)
    return list(out)


def distinct(texts: list[str]) -> list[str]:
    """``texts`` without repeats, in order."""
    seen: dict[str, None] = {}
    for t in texts:
        seen.setdefault(t, None)
    return list(seen)


def trim_join(text: str, prefix: str, suffix: str) -> str:
    """Conservative clean-up at the joins: drop whole lines the fill repeats from either side.

    The held suffix keeps the canvas from running into the suffix token-wise, but a fill can
    still end with a copy of the suffix's first line(s) placed just before it, or start with a
    copy of the line the cursor is on. Only whole, non-blank lines are dropped.
    """
    if not text:
        return text
    lines = text.splitlines(keepends=True)
    head = [ln for ln in suffix.splitlines(keepends=True) if ln.strip()][:3]
    # trailing duplicate of the suffix's first non-blank line(s)
    for k in range(min(len(head), len(lines)), 0, -1):
        tail = lines[-k:]
        if [t.strip() for t in tail] == [h.strip() for h in head[:k]] and tail[-1].endswith("\n"):
            lines = lines[:-k]
            break
    current = prefix.rsplit("\n", 1)[-1]
    if lines and current.strip() and lines[0].strip() == current.strip() and lines[0].endswith("\n"):
        lines = lines[1:]
    return "".join(lines)


def until(tokens: list[int], stops: set[int] | frozenset[int]) -> list[int]:
    """``tokens`` up to the first stop token."""
    end = next((i for i, t in enumerate(tokens) if t in stops), None)
    return tokens if end is None else tokens[:end]
