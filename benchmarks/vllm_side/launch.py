"""Starting the vLLM side from the project's own Python (no vLLM import here): where the side
venv's python is, a checkpoint vLLM accepts, the stand-in server as a process, its ``/metrics``.

Used by the tests (tests/vllm_harness.py) and by benchmarks/team_vllm.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SIDE = Path(__file__).resolve().parent
ROOT = SIDE.parents[1]
# The side venv's python: $DIFFGEMMA_VLLM_PYTHON, else the one make_venv.sh builds in the repository.
PYTHON_ENV = "DIFFGEMMA_VLLM_PYTHON"
DEFAULT_PYTHON = ROOT / ".vllm-venv" / "bin" / "python"
# vLLM refuses a DiffusionGemma checkpoint without an EntropyBound sampler config; the project's
# checkpoints leave it null (transformers' default sampler is the same entropy-bound one)
SAMPLER_CONFIG = {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1}


def side_python() -> Path | None:
    """The side venv's python, or None when it is not there."""
    path = Path(os.environ.get(PYTHON_ENV) or DEFAULT_PYTHON)
    return path if path.is_file() else None


def vllm_checkpoint(src: Path, dst: Path) -> Path:
    """``src`` as vLLM serves it: a copy whose generation config carries the sampler config."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    gen_path = dst / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    if not (gen.get("sampler_config") or {}).get("_cls_name"):
        gen["sampler_config"] = SAMPLER_CONFIG
    gen_path.write_text(json.dumps(gen, indent=2))
    return dst


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: ``'name{label="v",...}' -> value`` for every sample."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if base == name and all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


@dataclass
class StandIn:
    """A running stand-in vLLM server."""

    url: str
    name: str
    model_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=30).text)

    def counts(self) -> dict[str, float]:
        """What tests and benchmarks read: completions received (by vLLM's HTTP instrumentator),
        finished by the engine (``vllm:request_success_total``), aborted by their client (the
        stand-in's own counter), and running or waiting now."""
        m = self.metrics()
        return {
            "received": metric_sum(m, "http_requests_total", handler="/v1/completions"),
            "finished": metric_sum(m, "vllm:request_success_total"),
            "aborted": metric_sum(m, "standin:aborted_requests_total"),
            "running": metric_sum(m, "vllm:num_requests_running"),
            "waiting": metric_sum(m, "vllm:num_requests_waiting"),
        }

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[Any], wait_s: float = 30) -> None:
    """Stop a server started here: terminate it and wait, killing it when it has not gone in
    ``wait_s`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(wait_s)


def start_standin(python: Path, model_dir: Path, workdir: Path, *, name: str | None = "diffgemma",
                  max_num_seqs: int = 8, extra: list[str] | None = None, timeout: float = 300,
                  threads: int | None = None, port: int = 0) -> StandIn:
    """Start the stand-in on a loopback port (``port``; 0: a free one) and wait until ``/health``
    answers. ``name`` is the served model name (None: the checkpoint's path, as ``vllm serve DIR``
    names it); ``threads`` sets its torch threads (OMP_NUM_THREADS)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file, log = workdir / "standin.port", workdir / "standin.log"
    port_file.unlink(missing_ok=True)
    args = [str(python), str(SIDE / "standin.py"), "--model", str(model_dir), "--port", str(port),
            "--port-file", str(port_file), "--max-num-seqs", str(max_num_seqs),
            *(["--served-model-name", name] if name else []), *(extra or [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the stand-in vLLM server exited ({process.returncode}): {log.read_text()[-2000:]}")
        if port_file.exists() and port_file.read_text().strip():
            url = f"http://127.0.0.1:{port_file.read_text().strip()}"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return StandIn(url=url, name=name or str(model_dir.resolve()), model_dir=model_dir,
                                   process=process, log=log, args=args)
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the stand-in vLLM server did not start in {timeout:.0f} s: "
                               f"{log.read_text()[-2000:]}")
        time.sleep(0.5)
