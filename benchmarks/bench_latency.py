"""Warm infill latency through the daemon (the embedded diffgemma-mini by default), side by side.

    python benchmarks/bench_latency.py [--runs 15] [--model M] [--baseline DIR] [--threads N]

A real daemon serves the model on a temp socket; after two warm-up requests the same infill (as the
CLI sends it by default: no max_tokens or steps) is timed ``--runs`` times from the client: p50 and p90 of the round
trip, with the daemon's own steps, ms per step and decoder_tokens. ``--baseline DIR`` names a
checkout of another version of this project (for example one made with ``git worktree add``):
its daemon is started too and the requests alternate between the two (each going first in every
other pair), so the ratio holds when the machine's speed drifts. ``--threads N`` sets the daemons'
torch threads (OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from local_daemon import LocalDaemon, Series

PREFIX = "import math\n\n\ndef area(radius: float) -> float:\n    return "
SUFFIX = "\n\n\nprint(area(2.0))\n"


class Served(LocalDaemon):
    def __init__(self, label: str, work: Path, model: str, tree: Path | None, threads: int | None) -> None:
        env: dict[str, str] = {}
        if tree is not None:
            # import `diffgemma` from that checkout: a folder holding a link named after the package
            shim = work / f"shim-{label}"
            shim.mkdir()
            (shim / "diffgemma").symlink_to(tree.resolve())
            env["PYTHONPATH"] = str(shim)
        super().__init__(work, label, model, threads=threads, env=env)
        self.series = Series(label)

    def once(self, seed: int, record: bool = True) -> None:
        from diffgemma.runtime.api.protocol import InfillRequest

        start = time.perf_counter()
        result = self.client.infill(InfillRequest(prefix=PREFIX, suffix=SUFFIX, seed=seed))
        if record:
            self.series.add(start, result.timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="diffgemma-mini")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", type=Path, help="a checkout of another version, served side by side")
    parser.add_argument("--threads", type=int, help="torch threads in the daemons (OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dgl", dir="/tmp"))
    served: list[Served] = []
    try:
        served.append(Served("this tree", work, args.model, None, args.threads))
        if args.baseline is not None:
            served.append(Served("baseline", work, args.model, args.baseline, args.threads))
        for s in served:
            s.once(100, record=False)
            s.once(101, record=False)
        for i in range(args.runs):
            # alternate which daemon goes first: the second of a pair runs on a warmer machine
            for s in served if i % 2 == 0 else served[::-1]:
                s.once(i)
    finally:
        for s in served:
            s.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"warm infill through the daemon: model {args.model}, the CLI's default request, {args.runs} runs each, "
          f"threads {args.threads or 'default'}")
    print("| daemon | p50 ms | p90 ms | steps | ms/step | decoder_tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in served:
        print(s.series.row(("steps", "ms_per_step", "decoder_tokens")))
    if len(served) == 2:
        ratios = [b / a for a, b in zip(served[0].series.walls, served[1].series.walls, strict=True)]
        print(f"baseline / this tree, pair by pair: median {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
