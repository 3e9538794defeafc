"""Schemathesis against a real daemon: every operation of /openapi.json, all checks, a fixed seed.

    python benchmarks/fuzz_api.py [--examples 100] [--seed 1] [--model DIR] [--phases examples,coverage,...]
                                  [--json] [--report-dir DIR]

A third-party property-based fuzzer reads the daemon's own document and sends what it allows and what
it forbids: every answer must match the document (status, headers, content type, body, each event of
a stream), valid requests must be accepted and invalid ones refused, a 401 must come back without
the token, an undeclared method must get 405 with `Allow`, and nothing may answer 5xx.

The daemon is real: `diffgemma serve` on loopback TCP with a bearer token, serving a tiny
random-weight DiffusionGemma (built in a temp directory unless --model names one, with a 1,024-position
context so the longest prompts the fuzzer sends are cut to it quickly) with few steps and tokens per
request (--max-steps 2 --max-tokens 16), so the run measures the API, not the model.

Printed: test cases generated, failures (unique, must be 0), errors, Schemathesis's warnings, and the
run's time; with --json one JSON object. Exit status 1 when anything failed. The test suite runs this
with a small --examples (tests/test_api_fuzz.py); the longer run is this script's default.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from vllm_side.launch import stop_process

TOKEN = "fuzz-token-0123456789abcdef"
HOOKS = Path(__file__).resolve().parent.parent / "tests"  # schemathesis_hooks.py: NDJSON, line by line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the daemon exited: {log.read_text()[-2000:]}")
        try:
            status = httpx.get(base + "/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
            if status.status_code == 200 and status.json()["state"] == "ready":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the daemon did not get ready in 180 s")


def _daemon(model: Path, work: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = work / "daemon.log"
    env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(work / "state"), "DIFFGEMMA_RUNTIME_DIR": str(work / "run"),
           "DIFFGEMMA_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
    env.pop("DIFFGEMMA_MODEL", None)
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "diffgemma.cli", "serve", "--model", str(model),
                                    "--port", str(port), "--max-steps", "2", "--max-tokens", "16"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, log


def _schemathesis(base: str, args: argparse.Namespace, report: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
               "run", f"{base}/openapi.json", "--header", f"Authorization: Bearer {TOKEN}", "--checks", "all",
               "--seed", str(args.seed), "--max-examples", str(args.examples), "--workers", "1",
               "--generation-database", "none", "--request-timeout", "120", "--no-color",
               "--report", "json", "--report-json-path", str(report)]
    if args.phases:
        command += ["--phases", args.phases]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=report.parent, check=False)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dg-fuzz-"))
    try:
        model = Path(args.model) if args.model else None
        if model is None:
            from diffgemma.training.tiny import write_tiny

            model = write_tiny(work / "tiny", seed=0)
            config = json.loads((model / "config.json").read_text())
            config["text_config"]["max_position_embeddings"] = 1024
            (model / "config.json").write_text(json.dumps(config))
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        process, log = _daemon(model, work, port)
        try:
            _wait_ready(base, process, log)
            report = work / "report.json"
            started = time.perf_counter()
            done = _schemathesis(base, args, report)
            seconds = time.perf_counter() - started
        finally:
            stop_process(process)
        if not report.exists():
            raise SystemExit(f"schemathesis wrote no report (exit {done.returncode}):\n{done.stdout[-4000:]}"
                             f"\n{done.stderr[-4000:]}")
        data = json.loads(report.read_text())
        if args.report_dir:
            Path(args.report_dir).mkdir(parents=True, exist_ok=True)
            shutil.copy(report, Path(args.report_dir) / "schemathesis.json")
            (Path(args.report_dir) / "schemathesis.txt").write_text(done.stdout)
        warnings = {k: v for k, v in data["warnings"].items() if v}
        return {"examples": args.examples, "seed": args.seed, "operations": data["operations"]["tested"],
                "cases": data["test_cases"]["generated"], "failures": data["test_cases"]["unique_failures"],
                "errors": len(data["errors"]), "warnings": warnings, "seconds": round(seconds, 1),
                "exit_code": done.returncode, "output": done.stdout[-12000:] if done.returncode else ""}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=100, help="most test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", help="checkpoint directory (default: a tiny random-weight one)")
    parser.add_argument("--phases", help="comma-separated Schemathesis phases (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--report-dir", help="keep Schemathesis's JSON report and output here")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['operations']} operations, {result['cases']} test cases (--examples {args.examples}, "
              f"seed {args.seed}) in {result['seconds']} s: {result['failures']} failures, {result['errors']} errors")
        for kind, items in result["warnings"].items():
            print(f"warning {kind}: {items}")
        if result["output"]:
            print(result["output"])
    ok = result["exit_code"] == 0 and not result["failures"] and not result["errors"] and not result["warnings"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
