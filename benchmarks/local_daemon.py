"""What the daemon benchmarks share: `diffgemma serve` on a temp socket, ready to answer, and a
series of timed requests reported as one table row.

Imported by the benchmark scripts beside it (a script's own folder is on ``sys.path``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_side.launch import stop_process


class LocalDaemon:
    """``diffgemma serve --model MODEL`` on ``WORK/LABEL.sock`` with ``options``, its state and log
    in ``work`` too; the constructor returns once the model is loaded. ``threads`` sets its torch
    threads (OMP_NUM_THREADS), ``env`` adds to its environment."""

    def __init__(self, work: Path, label: str, model: str | Path, *, options: Sequence[str] = (),
                 threads: int | None = None, env: dict[str, str] | None = None) -> None:
        from diffgemma.runtime.api.client import Client

        self.socket = work / f"{label}.sock"
        self.log = work / f"{label}.log"
        full_env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(work / f"state-{label}"), **(env or {}),
                    **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "diffgemma.cli", "serve", "--model", str(model), "--socket", str(self.socket),
                 "--keep-alive", "-1", *options], stdout=subprocess.DEVNULL, stderr=log, env=full_env, cwd=str(work))
        self.client = Client(socket=self.socket)
        deadline = time.monotonic() + 300
        while not (self.client.health() and self.client.status().get("state") == "ready"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{label}: the daemon did not start: {self.log.read_text()[-800:]}")
            time.sleep(0.2)

    def close(self) -> None:
        self.client.close()
        stop_process(self.process, 60)


# How a column of the daemon's timings is shown (the rest as whole numbers).
FORMATS = {"ms_per_step": ".1f"}


@dataclass
class Series:
    """The round trips of one kind of request (ms) and the daemon's timings of each."""

    label: str
    walls: list[float] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)

    def add(self, started: float, timings: dict[str, Any]) -> None:
        """One answer: the request was sent at ``started`` (``time.perf_counter()``)."""
        self.walls.append((time.perf_counter() - started) * 1000)
        self.timings.append(timings)

    def row(self, columns: Sequence[str]) -> str:
        """A markdown row: the label, p50 and p90 of the round trips, the median of each column."""
        walls = sorted(self.walls)
        p90 = walls[min(len(walls) - 1, round(0.9 * (len(walls) - 1)))]
        medians = [format(statistics.median(float(t.get(c) or 0) for t in self.timings), FORMATS.get(c, ".0f"))
                   for c in columns]
        return f"| {self.label} | {statistics.median(walls):.0f} | {p90:.0f} | " + " | ".join(medians) + " |"
