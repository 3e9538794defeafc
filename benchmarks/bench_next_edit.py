"""What a next-edit suggestion costs next to an infill, through the daemon, in one run.

    python benchmarks/bench_next_edit.py [--runs 15] [--model M] [--threads N]

A real daemon serves the model (the embedded diffgemma-mini by default) on a temp socket. Two
requests are sent as the front ends build them, alternating (each going first in every other pair,
so the ratio holds when the machine's speed drifts): the infill `diffgemma infill FILE:LINE` sends
at the end of a line, and the next-edit `diffgemma next FILE` sends after a parameter was renamed
in the same file (the window rewritten, the diff in the prompt). Reported for each: the round
trip's p50 and p90, the daemon's steps, ms per step, canvases and decoder tokens (the canvas
positions run through the decoder), and the next-edit / infill ratio, pair by pair.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from local_daemon import LocalDaemon, Series

DOCUMENT = '''import math


def area(r, scale):
    """The area of a circle of radius r, scaled."""
    if radius < 0:
        raise ValueError(radius)
    value = math.pi * radius * radius
    return value * scale


def report(values):
    for value in values:
        print(area(value, 1.0))
'''
DIFF = ("--- a/shapes.py\n+++ b/shapes.py\n@@ -4 +4 @@\n-def area(radius, scale):\n+def area(r, scale):\n")
INFILL_AT = DOCUMENT.index("    value = math.pi")  # the start of a line, as `infill FILE:8:5` asks


def _requests() -> tuple[Any, Any]:
    from diffgemma.runtime.api.next_edit import Cursor, NextEditRequest, RecentEdit
    from diffgemma.runtime.api.request_builder import Buffer, Sampling, infill_request

    buffer = Buffer(text=DOCUMENT, language="python", path="shapes.py")
    infill = infill_request(buffer, INFILL_AT + 4, 6000, Sampling())
    nxt = NextEditRequest(text=DOCUMENT, cursor=Cursor(3, 10), edits=[RecentEdit("shapes.py", DIFF)],
                          path="shapes.py", language="python")
    return infill, nxt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="diffgemma-mini")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch threads in the daemon (OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    infill_req, next_req = _requests()
    work = Path(tempfile.mkdtemp(prefix="dgn", dir="/tmp"))
    infill, nxt = Series("infill (CLI default)"), Series("next-edit (after a rename)")
    proposed = 0  # next-edit answers with an edit
    daemon = LocalDaemon(work, "daemon", args.model, threads=args.threads)
    try:
        def once(series: Series, seed: int, record: bool = True) -> None:
            nonlocal proposed
            start = time.perf_counter()
            if series is infill:
                result = daemon.client.infill(type(infill_req)(**{**infill_req.__dict__, "seed": seed}))
            else:
                result = daemon.client.next_edit(type(next_req)(**{**next_req.__dict__, "seed": seed}))
                proposed += bool(result.edits)
            if record:
                series.add(start, result.timings)

        for s in (infill, nxt):
            once(s, 100, record=False)
            once(s, 101, record=False)
        proposed = 0
        for i in range(args.runs):
            for s in (infill, nxt) if i % 2 == 0 else (nxt, infill):
                once(s, i)
    finally:
        daemon.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"warm requests through the daemon: model {args.model}, {args.runs} runs each, alternating, "
          f"threads {args.threads or 'default'}")
    print("| request | p50 ms | p90 ms | steps | ms/step | canvases | decoder_tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    columns = ("steps", "ms_per_step", "canvases", "decoder_tokens")
    print(infill.row(columns))
    print(nxt.row(columns))
    ratios = [b / a for a, b in zip(infill.walls, nxt.walls, strict=True)]
    tokens = [float(b.get("decoder_tokens") or 0) / max(1.0, float(a.get("decoder_tokens") or 0))
              for a, b in zip(infill.timings, nxt.timings, strict=True)]
    print(f"next-edit / infill, pair by pair: time median {statistics.median(ratios):.2f}x, "
          f"decoder tokens median {statistics.median(tokens):.2f}x; next-edit proposed an edit in "
          f"{proposed} of {args.runs} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
