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
from pathlib import Path

PREFIX = "import math\n\n\ndef area(radius: float) -> float:\n    return "
SUFFIX = "\n\n\nprint(area(2.0))\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (default: a tiny random-weight one)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--sequential", action="store_true", help="in-process runs first, then the daemon")
    args = parser.parse_args()

    from diffgemma.runtime.api.client import Client
    from diffgemma.runtime.api.protocol import InfillRequest
    from diffgemma.runtime.engine.engine import Engine
    from diffgemma.runtime.engine.types import SamplingSettings

    work = Path(tempfile.mkdtemp(prefix="dgb", dir="/tmp"))
    model = args.model
    if model is None:
        from diffgemma.training.tiny import write_tiny

        model = str(write_tiny(work / "tiny", seed=0))

    settings = SamplingSettings(steps=args.steps, seed=args.seed)
    request = InfillRequest(prefix=PREFIX, suffix=SUFFIX, max_tokens=args.max_tokens, steps=args.steps,
                            seed=args.seed)
    engine = Engine.load(model, device=args.device)

    def in_process() -> float:
        start = time.perf_counter()
        engine.infill(PREFIX, SUFFIX, max_tokens=args.max_tokens, settings=settings)
        return (time.perf_counter() - start) * 1000

    local_ms: list[float] = []
    daemon_ms: list[float] = []
    engine_ms: list[float] = []
    inside_ms: list[float] = []
    process: subprocess.Popen[bytes] | None = None
    client: Client | None = None
    health_ms: list[float] = []

    def start_daemon() -> Client:
        nonlocal process
        sock = work / "b.sock"
        env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(work / "state")}
        command = [sys.executable, "-m", "diffgemma.cli", "serve", "--model", model, "--socket",
                   str(sock), "--keep-alive", "-1"]
        if args.device:
            command += ["--device", args.device]
        with open(work / "log", "wb") as log:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
        c = Client(socket=sock)
        deadline = time.monotonic() + 600
        while not (c.health() and c.status()["state"] == "ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the daemon did not start: {(work / 'log').read_text()[-500:]}")
            time.sleep(0.1)
        c.infill(request)  # warm-up: first call pays allocations and the prompt encode
        return c

    def through_daemon(c: Client) -> float:
        start = time.perf_counter()
        result = c.infill(request)
        wall = (time.perf_counter() - start) * 1000
        engine_ms.append(float(result.timings["total_ms"]))
        inside_ms.append(float(result.timings["daemon_ms"]))
        return wall

    try:
        in_process()  # warm-up, as for the daemon
        if args.sequential:
            local_ms = [in_process() for _ in range(args.runs)]
            engine.close()
            client = start_daemon()
            daemon_ms = [through_daemon(client) for _ in range(args.runs)]
        else:
            client = start_daemon()
            for _ in range(args.runs):
                local_ms.append(in_process())
                daemon_ms.append(through_daemon(client))
        # The transport floor: an HTTP round trip over the socket that does no work.
        health_ms = []
        for _ in range(50):
            start = time.perf_counter()
            client.health()
            health_ms.append((time.perf_counter() - start) * 1000)
    finally:
        if client is not None:
            client.close()
        if process is not None:
            process.terminate()
            process.wait(60)
        shutil.rmtree(work, ignore_errors=True)

    local, remote, inside = (statistics.median(v) for v in (local_ms, daemon_ms, engine_ms))
    print(f"model {model if args.model else 'tiny (random weights)'}, {args.runs} runs each, steps={args.steps}, "
          f"max_tokens={args.max_tokens}, seed={args.seed}, {'sequential' if args.sequential else 'alternating'}")
    print(f"in-process engine call    median {local:9.2f} ms")
    print(f"daemon socket round trip  median {remote:9.2f} ms   (engine time inside the daemon {inside:.2f} ms)")
    print(f"added by the daemon       {remote - local:+9.2f} ms   ratio {remote / local:.3f}x   "
          f"(wall minus its own engine time: {remote - inside:+.2f} ms)")
    gaps = [d - e for d, e in zip(inside_ms, engine_ms, strict=True)]
    print(f"inside the daemon, beyond the engine: median {statistics.median(gaps):.2f} ms "
          f"(queue hand-off to the worker thread, settings, bookkeeping)")
    print(f"GET /health round trip    median {statistics.median(health_ms):9.2f} ms   (transport alone)")


if __name__ == "__main__":
    main()
