"""Engine speed, measured side by side in one run: our loop vs transformers' ``generate``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What run_bench raises when the model cannot be found or read (its message is one line for the user).
from diffgemma.runtime.engine.loading import ModelLoadError as ModelLoadError

PREFIX = (
    "import os\n\n\ndef read_config(path):\n    with open(path) as handle:\n        return handle.read()\n\n\n"
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        "
)
SUFFIX = "\n\n    def pop(self):\n        return self.items.pop()\n"


@dataclass
class BenchRow:
    name: str
    ms_per_step: float
    steps: int
    total_ms: float


def _median(fn: Callable[[], tuple[int, float]], repeats: int) -> tuple[float, int, float]:
    per_step, totals, steps = [], [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        steps, _ = fn()
        elapsed = (time.perf_counter() - t0) * 1000
        totals.append(elapsed)
        per_step.append(elapsed / max(steps, 1))
    return statistics.median(per_step), steps, statistics.median(totals)


def run_bench(model: str, repeats: int = 5, steps: int = 16, device: str | None = None) -> list[BenchRow]:
    import torch

    from diffgemma.runtime.engine.engine import Engine
    from diffgemma.runtime.engine.types import SamplingSettings

    engine = Engine.load(model, device=device)
    ids = [engine.bos_id, *engine.encode_text(PREFIX)]
    length = engine.canvas_length
    # A confidence threshold nothing reaches keeps both loops at exactly `steps` steps.
    settings = SamplingSettings(seed=0, steps=steps, confidence_threshold=1e-12)

    def ours() -> tuple[int, float]:
        _, t = engine.generate(ids, max_new_tokens=length, settings=settings)
        return t.steps, t.ms_per_step

    def reference() -> tuple[int, float]:
        torch.manual_seed(0)
        engine.model.generate(
            torch.tensor([ids], device=engine.model.device), max_new_tokens=length,
            max_denoising_steps=steps, confidence_threshold=1e-12,
        )
        return steps, 0.0

    def infill() -> tuple[int, float]:
        r = engine.infill(PREFIX, SUFFIX, settings=settings)
        return r.timings.steps, r.timings.ms_per_step

    rows = []
    with torch.no_grad():
        ours(), reference()  # warm up both paths
        for name, fn in (("transformers generate", reference), ("engine generate", ours),
                         ("engine infill (length batch)", infill)):
            ms, n, total = _median(fn, repeats)
            rows.append(BenchRow(name, ms, n, total))
    return rows


def format_rows(rows: list[BenchRow]) -> str:
    base = rows[0].ms_per_step
    lines = [f"{'path':32} {'ms/step':>9} {'steps':>6} {'total ms':>9} {'vs generate':>12}"]
    for r in rows:
        lines.append(f"{r.name:32} {r.ms_per_step:9.2f} {r.steps:6d} {r.total_ms:9.1f} {base / r.ms_per_step:11.2f}x")
    return "\n".join(lines)


def describe(rows: list[BenchRow], info: dict[str, Any] | None = None) -> str:
    head = f"model: {info['model']} on {info['device']}\n" if info else ""
    return head + format_rows(rows)
