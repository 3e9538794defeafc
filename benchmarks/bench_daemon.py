"""The daemon's added latency per request: a socket round trip vs. the same engine call in-process.

    python benchmarks/bench_daemon.py [--model PATH] [--runs 20] [--steps 4] [--max-tokens 16]
                                      [--device cpu] [--sequential]

Without --model a tiny random-weight checkpoint is built in a temp directory. The same request
(same prefix, suffix, seed and settings) is timed N times through `Engine.infill` in this process
and N times through a real daemon on a temp Unix socket (`Client.infill`: HTTP/JSON, queue, worker
thread). Runs alternate between the two so machine load drifts hit both alike; --sequential runs
all in-process calls first and closes that engine before starting the daemon (for models too big
to hold twice).

Printed: median wall ms of each, the difference (the daemon's added latency) and the ratio, the
daemon's own engine time (timings.total_ms) to show the difference is transport + scheduling, and
a bare GET /health round trip (the transport floor).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffgemma.runtime.api.client import Client

PREFIX = "import math\n\n\ndef area(radius: float) -> float:\n    return "
SUFFIX = "\n\n\nprint(area(2.0))\n"


@dataclass
class _Samples:
    """Wall ms per call of each path, and the daemon's own timings of its calls."""

    local_ms: list[float] = field(default_factory=list)
    daemon_ms: list[float] = field(default_factory=list)
    engine_ms: list[float] = field(default_factory=list)  # the engine's time inside the daemon
    inside_ms: list[float] = field(default_factory=list)  # the daemon's time from request to answer
    health_ms: list[float] = field(default_factory=list)


class _Daemon:
    """A real daemon (`diffgemma serve`) on a temp Unix socket, and a client to it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None

    def start(self, model: str, device: str | None, request: Any) -> Client:
        from diffgemma.runtime.api import config
        from diffgemma.runtime.api.client import Client

        sock = self.work / "b.sock"
        env = {**os.environ, config.ENV_STATE_DIR: str(self.work / "state")}
        command = [sys.executable, "-m", "diffgemma.cli", "serve", "--model", model, "--socket",
                   str(sock), "--keep-alive", "-1"]
        if device:
            command += ["--device", device]
        with open(self.work / "log", "wb") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
        c = Client(socket=sock)
        deadline = time.monotonic() + 600
        while not (c.health() and c.status()["state"] == "ready"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the daemon did not start: {(self.work / 'log').read_text()[-500:]}")
            time.sleep(0.1)
        c.infill(request)  # warm-up: first call pays allocations and the prompt encode
        self.client = c
        return c

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (default: a tiny random-weight one)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--sequential", action="store_true", help="in-process runs first, then the daemon")
    return parser.parse_args()


def _measure(args: argparse.Namespace, model: str, work: Path) -> _Samples:
    """Time the same request in-process and through the daemon, alternating unless --sequential."""
    from diffgemma.runtime.api.protocol import InfillRequest
    from diffgemma.runtime.engine.engine import Engine
    from diffgemma.runtime.engine.types import SamplingSettings

    settings = SamplingSettings(steps=args.steps, seed=args.seed)
    request = InfillRequest(prefix=PREFIX, suffix=SUFFIX, max_tokens=args.max_tokens, steps=args.steps,
                            seed=args.seed)
    engine = Engine.load(model, device=args.device)
    samples = _Samples()

    def in_process() -> float:
        start = time.perf_counter()
        engine.infill(PREFIX, SUFFIX, max_tokens=args.max_tokens, settings=settings)
        return (time.perf_counter() - start) * 1000

    def through_daemon(c: Client) -> float:
        start = time.perf_counter()
        result = c.infill(request)
        wall = (time.perf_counter() - start) * 1000
        samples.engine_ms.append(float(result.timings["total_ms"]))
        samples.inside_ms.append(float(result.timings["daemon_ms"]))
        return wall

    daemon = _Daemon(work)
    try:
        in_process()  # warm-up, as for the daemon
        if args.sequential:
            samples.local_ms = [in_process() for _ in range(args.runs)]
            engine.close()
            client = daemon.start(model, args.device, request)
            samples.daemon_ms = [through_daemon(client) for _ in range(args.runs)]
        else:
            client = daemon.start(model, args.device, request)
            for _ in range(args.runs):
                samples.local_ms.append(in_process())
                samples.daemon_ms.append(through_daemon(client))
        # The transport floor: an HTTP round trip over the socket that does no work.
        for _ in range(50):
            start = time.perf_counter()
            client.health()
            samples.health_ms.append((time.perf_counter() - start) * 1000)
    finally:
        daemon.stop()
    return samples


def _report(args: argparse.Namespace, model: str, samples: _Samples) -> None:
    local, remote, inside = (statistics.median(v) for v in (samples.local_ms, samples.daemon_ms, samples.engine_ms))
    print(f"model {model if args.model else 'tiny (random weights)'}, {args.runs} runs each, steps={args.steps}, "
          f"max_tokens={args.max_tokens}, seed={args.seed}, {'sequential' if args.sequential else 'alternating'}")
    print(f"in-process engine call    median {local:9.2f} ms")
    print(f"daemon socket round trip  median {remote:9.2f} ms   (engine time inside the daemon {inside:.2f} ms)")
    print(f"added by the daemon       {remote - local:+9.2f} ms   ratio {remote / local:.3f}x   "
          f"(wall minus its own engine time: {remote - inside:+.2f} ms)")
    gaps = [d - e for d, e in zip(samples.inside_ms, samples.engine_ms, strict=True)]
    print(f"inside the daemon, beyond the engine: median {statistics.median(gaps):.2f} ms "
          f"(queue hand-off to the worker thread, settings, bookkeeping)")
    print(f"GET /health round trip    median {statistics.median(samples.health_ms):9.2f} ms   (transport alone)")


def main() -> None:
    args = _parse_args()
    work = Path(tempfile.mkdtemp(prefix="dgb", dir="/tmp"))
    try:
        model = args.model
        if model is None:
            from diffgemma.training.tiny import write_tiny

            model = str(write_tiny(work / "tiny", seed=0))
        samples = _measure(args, model, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(args, model, samples)


if __name__ == "__main__":
    main()
