"""Typists sharing one daemon: served through vLLM, then by the local engine, side by side in one run.

    python benchmarks/team_vllm.py --model DIR (--vllm-url URL | --stand-in) [--typists K] [--seconds S]
        [--interval-ms MS] [--pause-ms MS] [--steps N] [--engines vllm,local] [--seed N] [--threads N]

A daemon runs ``serve --engine vllm`` in front of a vLLM server: a real one (``--vllm-url``, serving
the checkpoint DIR names, on a GPU) or the stand-in vLLM server (``--stand-in``: vLLM's serving code
with the checkpoint's real canvases, on this machine's CPU; see benchmarks/vllm_side). K simulated
typists then type into their own files: every ``--interval-ms`` (jittered) each types a few more
characters and sends an infill at its new cursor with its own client key, which supersedes its
previous request if that is still running; now and then it pauses to think (``--pause-ms``).
After ``--seconds`` no more are sent and the ones in flight are awaited. The same load (the same
keystrokes at the same times) then runs on a daemon with ``--engine local`` over the same
checkpoint.

Prints one JSON line per engine: ``engine``, ``backend``, ``requests`` sent, ``completed`` (answered
with text), ``superseded`` (answered as cancelled: a newer keystroke replaced them), ``errors``,
``exact_joins`` (completed infills whose canvas held the suffix exactly: the daemon's
``timings.held_mismatches`` is 0; vLLM pins only a canvas's input, the local engine clamps the
held positions, so its answers always join; null when the daemon does not report it),
``vllm_requests`` (``/v1/completions`` requests the vLLM server counted on its /metrics during
the run), ``p50_ms``/``p95_ms`` (client round trips of the completed ones); then a ``ratio`` line
(vllm / local).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_daemon import LocalDaemon
from vllm_side.launch import metric_sum, parse_metrics, side_python, start_standin, vllm_checkpoint

# What the typists type: each gets one of these and types its body from the cursor on.
FILES = [  # (language, the text before the body, the body, the text after it)
    ("python", "def fibonacci(n: int) -> int:\n    ",
     "if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n", "\n\nprint(fibonacci(10))\n"),
    ("python", "class Stack:\n    def __init__(self):\n        ",
     "self.items = []\n\n    def push(self, item):\n        self.items.append(item)\n",
     "\n    def __len__(self):\n        return len(self.items)\n"),
    ("python", "def read_lines(path):\n    ",
     "with open(path, encoding=\"utf-8\") as handle:\n        for line in handle:\n            yield line.rstrip()\n",
     "\n\nfor line in read_lines(\"a.txt\"):\n    print(line)\n"),
    ("javascript", "function greet(name) {\n  ", "const message = `Hello, ${name}!`;\n  console.log(message);\n",
     "  return message;\n}\n"),
]


PAUSE_CHANCE = 0.15  # of a thinking pause after a keystroke burst


@dataclass
class Outcome:
    sent: float
    ms: float | None = None
    finish: str | None = None
    joined: bool | None = None
    error: str | None = None


@dataclass
class Load:
    typists: int
    seconds: float
    interval_ms: float
    pause_ms: float
    steps: int | None
    seed: int
    outcomes: list[Outcome] = field(default_factory=list)


async def _one(client: Any, request: Any, outcome: Outcome) -> None:
    from diffgemma.runtime.api.errors import DiffgemmaError

    try:
        result = await client.infill(request)
    except DiffgemmaError as exc:
        outcome.error = str(exc)
        return
    outcome.ms = (time.monotonic() - outcome.sent) * 1000
    outcome.finish = result.finish_reason
    mismatches = result.timings.get("held_mismatches")  # held positions the answer's canvas did not hold
    outcome.joined = None if mismatches is None else mismatches == 0


async def _typist(index: int, socket: Path, load: Load, start: float) -> None:
    """One typist: a keystroke burst every interval, each an infill that supersedes the last."""
    from diffgemma.runtime.api.client import AsyncClient
    from diffgemma.runtime.api.protocol import InfillRequest

    rng = random.Random(load.seed * 1000 + index)
    language, head, body, tail = FILES[index % len(FILES)]
    cursor, at = 0, start
    tasks = []
    async with AsyncClient(socket=socket, timeout=600) as client:
        while True:
            at += load.interval_ms / 1000 * rng.uniform(0.6, 1.4)
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if at - start >= load.seconds:
                break
            if rng.random() < PAUSE_CHANCE:  # a typist stops to think now and then: answers arrive then
                at += load.pause_ms / 1000 * rng.uniform(0.5, 1.5)
            cursor = min(len(body), cursor + rng.randint(1, 4))
            request = InfillRequest(prefix=head + body[:cursor], suffix=body[cursor:] + tail, language=language,
                                    client=f"typist-{index}", steps=load.steps)
            outcome = Outcome(sent=time.monotonic())
            load.outcomes.append(outcome)
            tasks.append(asyncio.create_task(_one(client, request, outcome)))
        await asyncio.gather(*tasks)


def run_load(socket: Path, load: Load) -> None:
    async def main() -> None:
        start = time.monotonic()
        await asyncio.gather(*(_typist(i, socket, load, start) for i in range(load.typists)))

    asyncio.run(main())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def summary(engine: str, backend: str, load: Load, vllm_requests: float | None) -> dict[str, Any]:
    done = [o for o in load.outcomes if o.finish is not None and o.finish != "cancelled"]
    joins = [o.joined for o in done]
    return {
        "engine": engine, "backend": backend, "typists": load.typists, "seconds": load.seconds,
        "requests": len(load.outcomes), "completed": len(done),
        "superseded": sum(o.finish == "cancelled" for o in load.outcomes),
        "errors": sum(o.error is not None for o in load.outcomes),
        "exact_joins": None if any(j is None for j in joins) else sum(bool(j) for j in joins),
        "vllm_requests": None if vllm_requests is None else int(vllm_requests),
        "p50_ms": percentile([o.ms for o in done if o.ms is not None], 0.5),
        "p95_ms": percentile([o.ms for o in done if o.ms is not None], 0.95),
        "mean_ms": round(statistics.fmean(o.ms for o in done if o.ms is not None), 1) if done else None,
    }


def completions_counted(url: str | None) -> float | None:
    """``/v1/completions`` requests a vLLM server has counted (its HTTP instrumentator)."""
    if url is None:
        return None
    import httpx

    return metric_sum(parse_metrics(httpx.get(f"{url}/metrics", timeout=30).text), "http_requests_total",
                      handler="/v1/completions")


def measure(engine: str, work: Path, model: Path, url: str | None, backend: str, args: argparse.Namespace) -> dict:
    options = ["--engine", "vllm", "--vllm-url", url] if engine == "vllm" and url else []  # local: the default
    daemon = LocalDaemon(work, engine, model, options=options, threads=args.threads)
    try:
        load = Load(args.typists, args.seconds, args.interval_ms, args.pause_ms, args.steps, args.seed)
        before = completions_counted(url)
        run_load(daemon.socket, load)
        after = completions_counted(url)
    finally:
        daemon.close()
    counted = None if before is None or after is None else after - before
    return summary(engine, backend if engine == "vllm" else "this machine's CPU (local engine)", load, counted)


def ratio(vllm: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    def div(key: str) -> float | None:
        a, b = vllm.get(key), local.get(key)
        return round(a / b, 3) if a is not None and b else None

    return {"ratio": "vllm/local", "p50_ms": div("p50_ms"), "p95_ms": div("p95_ms"), "completed": div("completed"),
            "requests": div("requests")}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="the checkpoint (the one the vLLM server runs)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--vllm-url", help="a running vLLM server serving --model")
    where.add_argument("--stand-in", action="store_true", help="start the stand-in vLLM server (CPU)")
    parser.add_argument("--typists", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval-ms", type=float, default=300.0, help="mean time between keystroke bursts")
    parser.add_argument("--pause-ms", type=float, default=2000.0, help="mean thinking pause (after about one "
                        "burst in seven)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per request (default: the model's)")
    parser.add_argument("--engines", default="vllm,local", help="which halves to run (default: both)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the typing schedule")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the daemons and the stand-in (OMP_NUM_THREADS; 1 on a busy machine)")
    args = parser.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "vllm" in args.engines and not (args.vllm_url or args.stand_in):
        parser.error("the vllm half needs --vllm-url URL or --stand-in")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="team-vllm-") as tmp:
        work = Path(tmp)
        model, url, backend, standin = args.model.resolve(), args.vllm_url, f"vLLM at {args.vllm_url}", None
        if args.stand_in and "vllm" in args.engines:
            python = side_python()
            if python is None:
                raise SystemExit("error: --stand-in needs the vLLM side venv: bash benchmarks/vllm_side/make_venv.sh")
            model = vllm_checkpoint(args.model, work / "checkpoint")  # the same checkpoint for both engines
            standin = start_standin(python, model, work / "standin", name=None,  # served as its path
                                    threads=args.threads)
            url, backend = standin.url, "stand-in vLLM server on this machine's CPU (not a real vLLM)"
        try:
            rows = {engine: measure(engine, work, model, url, backend, args) for engine in args.engines}
        finally:
            if standin is not None:
                standin.stop()
    for row in rows.values():
        print(json.dumps(row), flush=True)
    if "vllm" in rows and "local" in rows:
        print(json.dumps(ratio(rows["vllm"], rows["local"])), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
