"""Infill quality, side by side: a model through the engine vs. trivial baselines and vs. itself with
each strategy switched (hole-length search, suffix clamp, step count, rewrite strength).

    python benchmarks/eval_quality.py [--model PATH] [--limit 40] [--strategy-limit 12] [--out table.md]

Defaults to the shipped diffgemma-mini on CPU. Same module as `diffgemma eval`
(diffgemma.evals.evaluate); see that module for the suites and how they are scored.
"""

from __future__ import annotations

import sys

from diffgemma.evals.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
