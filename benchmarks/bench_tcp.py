"""Round trips to a daemon on loopback TCP, over one kept-alive connection, side by side.

    python benchmarks/bench_tcp.py [--runs 40] [--model M] [--baseline DIR]

What an OpenAI-style client or a team's editors see over TCP: the same requests, one connection kept
alive per daemon (as every HTTP client library does), timed from the client. Three requests: a bare
/health, /tokenize of a short text (the transport and the worker, no denoising), and a short infill (4 steps)
on the model (default: the shipped diffgemma-mini). ``--baseline DIR`` names a checkout of another
version of this project (for example `git archive main | tar -x -C DIR`): its daemon is started too
and the requests alternate between the two, so the ratio holds when the machine's speed drifts.

Printed: p50 and p90 wall milliseconds of each request on each daemon, and the ratio of the p50s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TOKEN = "bench-token-0123456789abcdef"
REQUESTS: dict[str, tuple[str, str, dict[str, object] | None]] = {
    "health": ("GET", "/health", None),
    "tokenize": ("POST", "/tokenize", {"content": "def area(radius: float) -> float:"}),
    "infill": ("POST", "/v1/infill", {"prefix": "def area(radius: float) -> float:\n    return ", "suffix": "\n",
                                      "max_tokens": 16, "steps": 4, "seed": 1}),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, label: str, work: Path, model: str, tree: Path | None) -> None:
        self.label = label
        port = _free_port()
        env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(work / f"state-{label}"),
               "DIFFGEMMA_RUNTIME_DIR": str(work / f"run-{label}"), "DIFFGEMMA_TOKEN": TOKEN}
        if tree is not None:
            # import `diffgemma` from that checkout: a folder holding a link named after the package
            shim = work / f"shim-{label}"
            shim.mkdir()
            (shim / "diffgemma").symlink_to(tree.resolve())
            env["PYTHONPATH"] = str(shim)
        self.log = work / f"{label}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "diffgemma.cli", "serve", "--model", model, "--port", str(port),
                 "--keep-alive", "-1"], stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=str(work))
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        deadline = time.monotonic() + 300
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{label}: the daemon did not start: {self.log.read_text()[-800:]}")
            time.sleep(0.2)
        self.walls: dict[str, list[float]] = {name: [] for name in REQUESTS}

    def _ready(self) -> bool:
        try:
            return bool(self.http.get("/v1/status").json().get("state") == "ready")
        except (httpx.HTTPError, ValueError):
            return False

    def once(self, name: str, record: bool = True) -> None:
        method, path, body = REQUESTS[name]
        started = time.perf_counter()
        answer = self.http.request(method, path, json=body)
        wall = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
        if record:
            self.walls[name].append(wall)

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--model", help="checkpoint (default: the shipped diffgemma-mini)")
    parser.add_argument("--baseline", type=Path, help="a checkout of another version to compare with")
    args = parser.parse_args(argv)
    if args.model is None:
        from diffgemma.runtime.engine.mini import MINI_DIR

        args.model = str(MINI_DIR)
    work = Path(tempfile.mkdtemp(prefix="dg-tcp-"))
    daemons: list[Served] = []
    try:
        daemons.append(Served("this", work, args.model, None))
        if args.baseline:
            daemons.append(Served("baseline", work, args.model, args.baseline))
        for d in daemons:
            for name in REQUESTS:  # warm-up: the connection, the prefix cache
                d.once(name, record=False)
                d.once(name, record=False)
        for i in range(args.runs):
            for name in REQUESTS:
                for d in daemons if i % 2 == 0 else reversed(daemons):
                    d.once(name)
        for name in REQUESTS:
            cells = [f"{d.label}: p50 {statistics.median(d.walls[name]):.1f} ms, p90 {_p(d.walls[name], 0.9):.1f} ms"
                     for d in daemons]
            if len(daemons) == 2:
                ratio = statistics.median(daemons[1].walls[name]) / statistics.median(daemons[0].walls[name])
                cells.append(f"baseline/this {ratio:.1f}x")
            print(f"{name:9s} " + "; ".join(cells))
    finally:
        for d in daemons:
            d.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
