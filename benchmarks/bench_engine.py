"""Engine ms per denoising step next to transformers' own `generate`, same input and steps.

    python benchmarks/bench_engine.py [--model DIR] [--repeats N] [--steps N]

Without --model it builds the tiny random-weight checkpoint in a temp dir. Prints a table
with the ratio from one run (speed does not depend on weight values).
"""

from __future__ import annotations

import argparse
import tempfile

from diffgemma.evals.bench import format_rows, run_bench
from diffgemma.training.tiny import write_tiny


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint dir or id (default: the tiny checkpoint)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(write_tiny(tmp))
        print(format_rows(run_bench(model, repeats=args.repeats, steps=args.steps)))


if __name__ == "__main__":
    main()
