"""The daemon half of bench_gpu_step.py: write the built model as a 4-bit checkpoint, serve it with
`diffgemma serve`, and time requests through the Unix socket while watching the daemon's memory.

Peak memory of the daemon process: on CUDA the driver's count for its PID (NVML, else nvidia-smi;
weights, KV cache, the allocator's cache and the CUDA context), polled every 50 ms, or the GPU's
total use over the baseline before the daemon started when per-process figures are unavailable; on
CPU the kernel's high-water mark (VmHWM), reset once the model is loaded.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CORPUS_REPEAT = 4
WARM_UP = "def warm_up(x):\n    "


def write_checkpoint(model: Any, out: Path, max_steps: int) -> Path:
    """The model as a 4-bit checkpoint (``save_quantized``) with the tiny tokenizer beside it: its ids
    are the vocabulary's first, as in the memory benchmark; what the model samples beyond them
    decodes to nothing, which does not change the work a step does."""
    from diffgemma.kernels.checkpoint import save_quantized
    from diffgemma.training.tiny import _CORPUS, TINY_VOCAB
    from diffgemma.training.tokenizer_build import BOS_ID, EOS_ID, PAD_ID, train_tokenizer

    text = model.config.text_config
    text.bos_token_id, text.eos_token_id, text.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    gen = model.generation_config
    gen.max_denoising_steps, gen.t_min, gen.t_max = max_steps, 0.4, 0.8
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    save_quantized(model, out)
    train_tokenizer([_CORPUS] * _CORPUS_REPEAT, TINY_VOCAB, out)
    return out


def prefix_text(model_dir: Path, tokens: int) -> str:
    """Code text of about ``tokens`` tokens (the corpus repeated), cut on a line end."""
    from transformers import AutoTokenizer

    from diffgemma.training.tiny import _CORPUS

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids: list[int] = []
    piece = tok(_CORPUS, add_special_tokens=False)["input_ids"]
    while len(ids) < tokens:
        ids += piece
    text = tok.decode(ids[:tokens])
    return text[: text.rfind("\n") + 1]


class MemoryWatch:
    """Peak memory of one process while it runs (see the module doc)."""

    def __init__(self, pid: int, cuda: bool, baseline: int) -> None:
        """``baseline``: GPU memory in use before the process started (CUDA)."""
        self.pid, self.cuda = pid, cuda
        self.peak = 0
        self.source = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline = baseline

    def start(self) -> None:
        """Begin watching: on CPU reset the high-water mark to the RSS now."""
        if not self.cuda:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.source = "VmHWM over the RSS after loading"
            self._base_rss = _status_kb(self.pid, "VmRSS") * 1024
            return
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            used = _gpu_process_used(self.pid)
            if used is not None:
                self.source = "the driver's count for the daemon's PID"
            else:
                used = max(0, _gpu_total_used() - self._baseline)
                self.source = "GPU memory in use over the baseline before the daemon started"
            self.peak = max(self.peak, used)
            self._stop.wait(0.05)

    def stop(self) -> int:
        """Peak bytes: on CUDA the whole process's, on CPU those added since ``start``."""
        if not self.cuda:
            return _status_kb(self.pid, "VmHWM") * 1024 - self._base_rss
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.peak


def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/{pid}/status")


@functools.cache
def _nvml() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def _gpu_process_used(pid: int) -> int | None:
    nvml = _nvml()
    if nvml is not None:
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory:
                return int(proc.usedGpuMemory)
        return None
    out = _smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            return int(parts[1]) * 2**20
    return None


def _gpu_total_used() -> int:
    nvml = _nvml()
    if nvml is not None:
        return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0)).used)
    out = _smi(["--query-gpu=memory.used", "--format=csv,noheader,nounits"]).strip().splitlines()
    return int(out[0]) * 2**20 if out and out[0].strip().isdigit() else 0


def _smi(args: list[str]) -> str:
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@dataclass
class DaemonRun:
    load_s: float = 0.0
    resident_bytes: int = 0
    warmup_s: float = 0.0
    infill: dict[str, Any] = field(default_factory=dict)
    infill_s: float = 0.0
    generation: dict[str, Any] = field(default_factory=dict)
    generation_s: float = 0.0
    peak_bytes: int = 0
    peak_source: str = ""
    log_tail: str = ""


def _start(model_dir: Path, work: Path, device: str, deadline: float) -> tuple[subprocess.Popen[bytes], Any, Path]:
    from diffgemma.runtime.api.client import Client

    sock = work / "bench.sock"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the daemon runs real kernels
    env["DIFFGEMMA_STATE_DIR"] = str(work / "state")
    # a request still running at the deadline returns its best draft so far instead of overrunning
    seconds = max(30, int(deadline - time.monotonic()))
    command = [sys.executable, "-m", "diffgemma.cli", "serve", "--model", str(model_dir), "--socket", str(sock),
               "--keep-alive", "-1", "--device", device, "--max-request-seconds", str(seconds)]
    log_path = work / "daemon.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
    return process, Client(socket=sock), log_path


def _wait_ready(process: subprocess.Popen[bytes], client: Any, log_path: Path, deadline: float) -> None:
    while not (client.health() and client.status().get("state") == "ready"):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the daemon did not become ready: {tail}")
        time.sleep(0.2)


def _timed(client: Any, request: Any) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    result = client.infill(request)
    return dict(result.timings), time.perf_counter() - t0


def run_daemon(model_dir: Path, work: Path, device: str, prefix: str, suffix: str, steps: int | None,
               gen_tokens: int, deadline: float) -> DaemonRun:
    """Load, warm up, one infill (held suffix, hole-length search), one long plain generation."""
    from diffgemma.runtime.api.protocol import InfillRequest

    run = DaemonRun()
    cuda = device.startswith("cuda")
    baseline = _gpu_total_used() if cuda else 0
    t0 = time.perf_counter()
    process, client, log_path = _start(model_dir, work, device, deadline)
    try:
        _wait_ready(process, client, log_path, deadline)
        run.load_s = time.perf_counter() - t0
        run.resident_bytes = int(client.status().get("memory_bytes") or 0)
        # warm-up on other text, so that the infill below encodes its whole prefix: Triton's compiled
        # kernels come from its cache, cuBLAS and the allocator settle
        _, run.warmup_s = _timed(client, InfillRequest(prefix=WARM_UP, suffix=suffix, steps=2, seed=1))
        watch = MemoryWatch(process.pid, cuda, baseline)
        watch.start()
        # the denoising path only: no syntax repair rounds (the prefix reads as Python, which would turn them on)
        run.infill, run.infill_s = _timed(client, InfillRequest(prefix=prefix, suffix=suffix, steps=steps, seed=0,
                                                                refine=False))
        run.generation, run.generation_s = _timed(client, InfillRequest(prefix=prefix, suffix="", steps=steps,
                                                                        max_tokens=gen_tokens, seed=0, refine=False))
        run.peak_bytes, run.peak_source = watch.stop(), watch.source
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        run.log_tail = log_path.read_text(errors="replace")[-600:]
    return run
