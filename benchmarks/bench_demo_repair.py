"""The README's demo (``def add(a, b):`` with the hole as its body) over many seeds, in process on
the embedded model: how often the filled file parses with repair's closed-opener row and without
it, requests alternating in one run, and the time per infill.

    OMP_NUM_THREADS=1 python benchmarks/bench_demo_repair.py [--seeds 30]
"""

from __future__ import annotations

import argparse
import ast
import time
from typing import Any

from diffgemma.runtime.engine import repair
from diffgemma.runtime.engine.engine import Engine
from diffgemma.runtime.engine.mini import MINI_DIR
from diffgemma.runtime.engine.types import SamplingSettings

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    args = parser.parse_args()
    engine = Engine.load(str(MINI_DIR), device="cpu")
    closed = repair._closed

    def without(*_: Any, **__: Any) -> list[Any]:
        return []

    rows = {"with the closed row": [0, 0.0], "without it": [0, 0.0]}
    for seed in range(args.seeds):
        for name in rows:
            repair._closed = closed if name.startswith("with the") else without
            start = time.perf_counter()
            result = engine.infill(PREFIX, SUFFIX, language="python", settings=SamplingSettings(seed=seed))
            rows[name][1] += time.perf_counter() - start
            try:
                ast.parse(PREFIX + result.text + SUFFIX)
                rows[name][0] += 1
            except SyntaxError:
                pass
    repair._closed = closed
    for name, (parsed, seconds) in rows.items():
        print(f"{name}: {parsed:.0f}/{args.seeds} filled files parse, {1000 * seconds / args.seeds:.0f} ms per infill")


if __name__ == "__main__":
    main()
