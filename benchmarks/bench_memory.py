"""Memory of one infill at the real canvas and vocabulary, measured through the daemon.

    python benchmarks/bench_memory.py                  # stock vs streaming head, side by side, one run
    python benchmarks/bench_memory.py --real-config    # the published 26B-A4B config, random 4-bit weights, CPU

Default mode: a random-weight DiffusionGemma with the real canvas (256) and vocabulary (262,144) and
toy hidden sizes is written to a temp directory; for each sampler (``--sampler stock``, then the
default streaming head) a real daemon (`diffgemma serve`) is started on a
temp socket, its peak RSS is reset once the model is loaded (``/proc/PID/clear_refs``), one infill
is sent as the CLI sends it by default (no ``max_tokens``: the hole may take the whole canvas, so
the length search starts with 9 candidates) for ``--steps`` steps, and the daemon's peak RSS
(``VmHWM``) over its RSS after loading is reported with the request's ``decoder_tokens`` and ms per
step. Then the streaming daemon runs the same request for ``--count-steps`` steps with early
stopping off, for the decoder tokens of a whole infill.

``--real-config``: the DiffusionGemma 26B-A4B config as published, built with random weights
directly in 4-bit in CPU memory (no bf16 copy of the experts ever exists), wrapped in the real
``Engine`` and run for one infill of ``--steps`` denoising steps over a 256-token prefix with a held
suffix and the hole-length search on, the hole capped at ``max_tokens`` 128 (6 candidates). Weights
outside the experts and linears are float32, as the daemon loads a model on CPU. Reports this
process's peak RSS (weights included), ms per step and ``decoder_tokens``. Needs ~18 GB of memory
and a few minutes per step on 2 cores; it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PREFIX = "import math\n\n\ndef area(radius: float) -> float:\n    return "
SUFFIX = "\n\n\nprint(area(2.0))\n"
REAL_CONFIG_MAX_TOKENS = 128  # --real-config: a 128-token hole budget keeps it to 6 candidates


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def write_real_vocab_model(out: Path) -> Path:
    """The tiny test architecture at the real canvas and vocabulary (toy widths), with a tokenizer."""
    from diffgemma.training.tiny import write_tiny

    return write_tiny(out, seed=0, canvas_length=256, vocab_size=262_144)


def measure_daemon(model: Path, work: Path, sampler: str | None, steps: int, count_steps: int = 0) -> dict[str, Any]:
    """One infill through a real daemon: peak RSS added over the loaded RSS, and the result's timings;
    with ``count_steps``, the timings of the same request run that many steps without stopping early."""
    from diffgemma.runtime.api.client import Client
    from diffgemma.runtime.api.protocol import InfillRequest

    label = sampler or "stream"
    sock = work / f"{label}.sock"
    env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(work / f"state-{label}")}
    command = [sys.executable, "-m", "diffgemma.cli", "serve", "--model", str(model),
               "--socket", str(sock), "--keep-alive", "-1", "--device", "cpu", "--max-request-seconds", "0"]
    if sampler:
        command += ["--sampler", sampler]
    log_path = work / f"{label}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
    client = Client(socket=sock)
    try:
        deadline = time.monotonic() + 600
        while not (client.health() and client.status().get("state") == "ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start: {log_path.read_text()[-800:]}")
            time.sleep(0.2)
        time.sleep(0.5)
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # VmHWM := current RSS
        loaded_kb = _status_kb(process.pid, "VmRSS")
        # the CLI's default request: no max_tokens (the daemon fills up to one canvas)
        request = InfillRequest(prefix=PREFIX, suffix=SUFFIX, steps=steps, seed=0)
        result = client.infill(request)
        peak_kb = _status_kb(process.pid, "VmHWM")
        sampler_used = client.status().get("sampler")
        whole = None
        if count_steps:
            # a confidence no random model reaches: every row runs until pruned or the last step
            long = InfillRequest(prefix=PREFIX, suffix=SUFFIX, steps=count_steps, seed=0,
                                 options={"confidence_threshold": 1e-12})
            whole = client.infill(long).timings
    finally:
        client.close()
        process.terminate()
        process.wait(60)
    return {"sampler": sampler_used or label, "loaded_mb": loaded_kb / 1024, "added_mb": (peak_kb - loaded_kb) / 1024,
            "timings": result.timings, "whole": whole}


def daemon_mode(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="dgm", dir="/tmp"))
    try:
        model = write_real_vocab_model(work / "model")
        rows = [measure_daemon(model, work, "stock", args.steps),
                measure_daemon(model, work, None, args.steps, args.count_steps)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"one infill through the daemon: canvas 256, vocabulary 262,144 (toy widths), the CLI's default "
          f"request (no max_tokens), steps {args.steps}")
    print("| sampler | RSS after load (MB) | added by one infill (MB) | decoder_tokens | steps | ms/step |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        t = row["timings"]
        print(f"| {row['sampler']} | {row['loaded_mb']:.0f} | {row['added_mb']:.0f} | {t.get('decoder_tokens')} | "
              f"{t.get('steps')} | {float(t.get('ms_per_step', 0.0)):.0f} |")
    stock, stream = rows
    print(f"memory ratio stock/stream: {stock['added_mb'] / max(stream['added_mb'], 1.0):.1f}x")
    whole = stream["whole"]
    if whole:
        steps = int(whole.get("steps") or 0)
        tokens = int(whole.get("decoder_tokens") or 0)
        print(f"the same request over {steps} steps (stream, no early stop): decoder_tokens {tokens} "
              f"({tokens / max(1, 256 * steps):.2f} canvases per step)")
    return 0


def real_config_mode(args: argparse.Namespace) -> int:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_gpu_step import build_random_quantized, make_config

    from diffgemma.runtime.engine.engine import Engine
    from diffgemma.runtime.engine.loading import LoadedModel
    from diffgemma.runtime.engine.types import SamplingSettings
    from diffgemma.training.tiny import _CORPUS, TINY_VOCAB
    from diffgemma.training.tokenizer_build import BOS_ID, EOS_ID, PAD_ID, train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="dgr", dir="/tmp"))
    try:
        train_tokenizer([_CORPUS] * 4, TINY_VOCAB, work)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    config = make_config(small=False)
    config.text_config.bos_token_id, config.text_config.eos_token_id = BOS_ID, EOS_ID
    config.text_config.pad_token_id = PAD_ID
    torch.manual_seed(0)
    t0 = time.perf_counter()
    # float32 outside the 4-bit weights, as the daemon loads a model on CPU (bf16 matmuls have no
    # hardware path on most CPUs and run ~80x slower than float32 there)
    model = build_random_quantized(config, "cpu", torch.float32)
    gen = model.generation_config
    gen.max_denoising_steps, gen.t_min, gen.t_max = 48, 0.4, 0.8
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    build_s = time.perf_counter() - t0
    built_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    engine = Engine(LoadedModel(model=model, tokenizer=tokenizer, name="diffusiongemma-26B-A4B (random 4-bit)",
                                path=Path("."), device="cpu", dtype="float32"))
    prefix_ids = tokenizer(_CORPUS, add_special_tokens=False)["input_ids"]
    while len(prefix_ids) < 256:
        prefix_ids = prefix_ids + prefix_ids
    prefix = tokenizer.decode(prefix_ids[:255])
    t1 = time.perf_counter()
    result = engine.infill(prefix, SUFFIX, max_tokens=REAL_CONFIG_MAX_TOKENS,
                           settings=SamplingSettings(steps=args.steps, seed=0))
    infill_s = time.perf_counter() - t1
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t = result.timings
    print(f"real DiffusionGemma 26B-A4B config, random 4-bit weights, CPU ({torch.get_num_threads()} threads)")
    print(f"built in {build_s:.0f} s; peak RSS after building {built_gb:.2f} GB")
    print(f"one infill: {t.encoded_tokens} prefix tokens encoded in {t.encode_ms / 1000:.1f} s, {t.steps} steps "
          f"at {t.ms_per_step / 1000:.1f} s/step, decoder_tokens {t.decoder_tokens} "
          f"({t.decoder_tokens / max(1, 256 * t.steps):.2f} canvases per step), {infill_s:.0f} s in all")
    print(f"peak RSS of the whole process (weights included): {peak_gb:.2f} GB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real-config", action="store_true", help="the published 26B-A4B config on CPU (~18 GB)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per canvas (default 2)")
    parser.add_argument("--count-steps", type=int, default=16,
                        help="steps of the decoder-token count on the streaming daemon (0: skip; default 16)")
    args = parser.parse_args(argv)
    return real_config_mode(args) if args.real_config else daemon_mode(args)


if __name__ == "__main__":
    raise SystemExit(main())
