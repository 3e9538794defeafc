"""The product path on a GPU: the real DiffusionGemma 26B-A4B at 4 bits, its kernels checked, one infill
through a real daemon.

    python benchmarks/bench_gpu_step.py                # CUDA: the real config, random 4-bit weights
    python benchmarks/bench_gpu_step.py --cpu-small    # the same code at toy sizes on CPU (a test runs it)

Phases, each timed and printed with its budget (the whole run is meant to finish inside 8 minutes on
an H100; ``--deadline`` stops the daemon phase early instead of overrunning):

1. ``sizes``: parameters and bytes in bf16 and at 4 bits, from meta-device models.
2. ``build``: the model with random 4-bit weights built in place on the device (no bf16 copy of the
   experts ever exists); the device's copy bandwidth and bf16 matmul rate, measured once.
3. ``kernels``: the 4-bit experts (transformers' ``diffgemma_nf4`` implementation, Triton on CUDA),
   a bitsandbytes NF4 linear and the streaming head at the real vocabulary, each against its CPU
   reference at the model's real shapes (``gpu_checks.py``). With ``--cpu-small`` the Triton kernels
   run in Triton's interpreter.
4. ``checkpoint``: the built model written as a 4-bit checkpoint (what `diffgemma quantize` writes).
5. ``daemon``: `diffgemma serve` loads it; after a warm-up request, one infill with a 2,048-token
   prefix, the suffix held and the hole-length search on (time to the finished infill, ms per step,
   the daemon's peak memory), then a long plain generation (tokens per second, ms per one-canvas
   step, and that step against the roofline: the bytes it must read over the measured bandwidth, and
   its FLOPs over the measured matmul rate).

Prints a readable summary and, last, one JSON line with every number; exits 1 when a kernel check
fails or a phase did not run. Speed does not depend on weight values: random routing spreads tokens
over experts about as a canvas does, and a random model never settles, so every canvas runs the
step limit (``--steps``; the real model stops after 12-16 steps of at most 48).

Real config (Gemma 4 26B-A4B text backbone as published with the model and in transformers'
DiffusionGemmaTextConfig defaults): 30 layers (5 sliding : 1 full), hidden 2816, 16 heads, 8 KV heads
(2 on full-attention layers), head_dim 256 (512 on full layers), dense MLP 2112, 128 experts top-8 of
width 704, vocab 262,144, sliding window 1024, final softcap 30, canvas 256, default vision tower.

On a machine whose image already has torch and Triton, install the package without touching them
(``pip install --no-deps -e .``) and make its other runtime dependencies importable (transformers
5.23, bitsandbytes, starlette, uvicorn, httpx, typer, rich, pygls, tree-sitter and its language pack,
safetensors, tokenizers, platformdirs, watchfiles). Phase times go to stdout as they end, so a run
cut short still shows where the time went.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below

from gpu_model import (
    REAL_TEXT,
    SMALL_TEXT,
    build_random_quantized,
    make_config,
    measure_device,
    size_table,
    step_cost,
)

__all__ = ["REAL_TEXT", "SMALL_TEXT", "build_random_quantized", "make_config", "size_table"]

GB = 1e9
# seconds each phase should take on an H100 (80 GB); 445 s in all, inside the 8 minutes
BUDGETS = {"sizes": 15, "build": 45, "kernels": 90, "checkpoint": 90, "daemon": 205}
SUFFIX = "\n\n\nprint(area(2.0))\n"


@dataclass
class Settings:
    small: bool
    prefix_tokens: int
    steps: int | None
    gen_tokens: int
    deadline: float  # time.monotonic() by which the run must end
    work: Path


@dataclass
class Report:
    mode: str
    phases: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def phase(self, name: str, started: float) -> None:
        took = time.perf_counter() - started
        self.phases[name] = round(took, 2)
        over = "  OVER BUDGET" if not self.mode.startswith("cpu") and took > BUDGETS[name] else ""
        print(f"[phase {name}: {took:.1f} s of {BUDGETS[name]} s budget]{over}", flush=True)


def _sizes(report: Report, config: Any, small: bool) -> None:
    sizes = size_table(config)
    report.data["sizes"] = sizes
    print(f"model: {'toy sizes on CPU (--cpu-small)' if small else 'real DiffusionGemma 26B-A4B config'}")
    print(f"  parameters {sizes['params'] / 1e9:.3f} B, experts {sizes['expert_params'] / sizes['params']:.1%}")
    print(f"  bf16 {sizes['bf16_bytes'] / GB:.3f} GB ({sizes['bf16_bytes'] / 2**30:.2f} GiB)   "
          f"4-bit NF4 {sizes['nf4_bytes'] / GB:.3f} GB ({sizes['nf4_bytes'] / 2**30:.2f} GiB)")


def _build(report: Report, config: Any, device: str, dtype: Any) -> Any:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        report.data["device"] = torch.cuda.get_device_name()
    else:
        report.data["device"] = f"cpu ({torch.get_num_threads()} threads)"
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_random_quantized(config, device, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        report.data["build"] = {"vram_gb": torch.cuda.memory_allocated() / GB,
                                "peak_vram_gb": torch.cuda.max_memory_allocated() / GB}
    vram = f", {report.data['build']['vram_gb']:.2f} GB in use" if device == "cuda" else ""
    print(f"built random 4-bit model on {report.data['device']} in {time.perf_counter() - t0:.1f} s{vram}")
    report.data["ceilings"] = measure_device(device)
    report.data["step_cost"] = step_cost(model, config)
    return model


def _kernels(report: Report, model: Any, config: Any, small: bool) -> None:
    from gpu_checks import run_checks

    checks = run_checks(model, int(config.canvas_length), interpret=small)
    report.data["checks"] = [c.as_dict() for c in checks]
    for c in checks:
        sign = ">=" if c.lower else "<="
        print(f"  {'ok  ' if c.ok else 'FAIL'} {c.name:17s} {c.value:.3g} (bound {sign} {c.bound:g})  {c.note}")
    report.failed += [f"check {c.name}" for c in checks if not c.ok]


def _checkpoint(report: Report, model: Any, settings: Settings) -> Path:
    from gpu_daemon import write_checkpoint

    out = write_checkpoint(model, settings.work / "model", max_steps=48)
    size = sum(f.stat().st_size for f in out.iterdir())
    report.data["checkpoint_gb"] = size / GB
    print(f"  wrote {size / GB:.2f} GB to {out}")
    return out


def _release() -> None:
    """Hand the device memory the built model held back, before the daemon loads its own copy."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _daemon(report: Report, model_dir: Path, settings: Settings) -> None:
    from gpu_daemon import prefix_text, run_daemon

    device = "cpu" if settings.small else "cuda"
    prefix = prefix_text(model_dir, settings.prefix_tokens)
    run = run_daemon(model_dir, settings.work, device, prefix, SUFFIX, settings.steps, settings.gen_tokens,
                     settings.deadline)
    infill, gen = run.infill, run.generation
    report.data["daemon"] = {
        "load_s": run.load_s, "resident_gb": run.resident_bytes / GB, "warmup_s": run.warmup_s,
        "infill": {**infill, "wall_s": run.infill_s}, "generation": {**gen, "wall_s": run.generation_s},
        "tokens_per_s": gen.get("generated_tokens", 0) / max(run.generation_s, 1e-9),
        ("peak_vram_gb" if device == "cuda" else "peak_added_rss_gb"): run.peak_bytes / GB,
        "peak_source": run.peak_source,
    }
    report.data["roofline"] = _roofline(report.data, float(gen.get("ms_per_step", 0.0)))


def _roofline(data: dict[str, Any], ms_per_step: float) -> dict[str, float]:
    """One canvas per step (plain generation) against the floors of its bytes and FLOPs."""
    cost, ceil = data["step_cost"], data["ceilings"]
    bytes_ms = cost["bytes"] / ceil["bandwidth_bps"] * 1000.0
    flops_ms = cost["flops"] / ceil["matmul_flops"] * 1000.0
    floor = max(bytes_ms, flops_ms)
    return {"bytes_floor_ms": bytes_ms, "flops_floor_ms": flops_ms, "ms_per_step": ms_per_step,
            "fraction": floor / ms_per_step if ms_per_step else 0.0}


def _summary(report: Report) -> None:
    d = report.data
    print("\nsummary")
    if "daemon" in d:
        dm = d["daemon"]
        inf, gen = dm["infill"], dm["generation"]
        peak = dm.get("peak_vram_gb", dm.get("peak_added_rss_gb", 0.0))
        label = "peak VRAM of the daemon" if "peak_vram_gb" in dm else "peak RSS added by the requests"
        print(f"  daemon: loaded in {dm['load_s']:.1f} s, {dm['resident_gb']:.2f} GB resident; {label} {peak:.2f} GB "
              f"({dm['peak_source']})")
        print(f"  infill: {inf.get('encoded_tokens')} prompt tokens encoded ({inf.get('cached_tokens')} cached) in "
              f"{inf.get('encode_ms', 0):.0f} ms, "
              f"{inf.get('steps')} steps at {inf.get('ms_per_step', 0):.1f} ms, decoder_tokens "
              f"{inf.get('decoder_tokens')}, finished in {inf['wall_s'] * 1000:.0f} ms")
        print(f"  plain generation: {gen.get('generated_tokens')} tokens in {gen['wall_s']:.2f} s = "
              f"{dm['tokens_per_s']:.1f} tokens/s, {gen.get('steps')} steps at {gen.get('ms_per_step', 0):.1f} ms")
    if "roofline" in d:
        r, c = d["roofline"], d["step_cost"]
        ceil = d["ceilings"]
        print(f"  roofline: a one-canvas step reads {c['bytes'] / GB:.3g} GB ({r['bytes_floor_ms']:.2f} ms at "
              f"{ceil['bandwidth_bps'] / GB:.4g} GB/s copy bandwidth) and does {c['flops'] / 1e12:.3g} TFLOP "
              f"({r['flops_floor_ms']:.2f} ms at {ceil['matmul_flops'] / 1e12:.3g} TFLOP/s matmul): "
              f"{r['fraction']:.1%} of the roofline speed")
    print(f"  phases: {', '.join(f'{k} {v:.1f} s' for k, v in report.phases.items())}; "
          f"total {sum(report.phases.values()):.1f} s")
    if report.failed:
        print(f"  FAILED: {', '.join(report.failed)}")


def run(settings: Settings) -> int:
    import torch

    config = make_config(settings.small)
    report = Report(mode="cpu-small" if settings.small else "cuda")
    t = time.perf_counter()
    _sizes(report, config, settings.small)
    report.phase("sizes", t)
    if not settings.small and not torch.cuda.is_available():
        print("no CUDA GPU present: the GPU measurements were not run (use --cpu-small to exercise the path)")
        print(json.dumps({"mode": "no-gpu", "sizes": report.data["sizes"]}))
        return 0
    device, dtype = ("cpu", torch.float32) if settings.small else ("cuda", torch.bfloat16)
    try:
        t = time.perf_counter()
        model = _build(report, config, device, dtype)
        report.phase("build", t)
        t = time.perf_counter()
        _kernels(report, model, config, settings.small)
        report.phase("kernels", t)
        t = time.perf_counter()
        model_dir = _checkpoint(report, model, settings)
        report.phase("checkpoint", t)
        del model
        _release()
        t = time.perf_counter()
        _daemon(report, model_dir, settings)
        report.phase("daemon", t)
    except Exception as exc:  # a failed phase is reported with what ran before it
        report.failed.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
    _summary(report)
    print(json.dumps({"mode": report.mode, "phases": report.phases, "failed": report.failed, **report.data},
                     default=float))
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-small", action="store_true", help="the same code at toy sizes on CPU")
    parser.add_argument("--prefix", type=int, default=None, help="prefix tokens of the infill (2048; small 128)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per canvas (model's 48; small 2)")
    parser.add_argument("--gen-tokens", type=int, default=None, help="plain generation length (1024; small 64)")
    parser.add_argument("--deadline", type=float, default=470.0, help="seconds the whole run may take (470)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the checkpoint (a temp folder)")
    args = parser.parse_args(argv)
    small = args.cpu_small
    if small:  # the Triton kernels run in the interpreter on CPU tensors (set before they are built)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="dg-gpu-bench"))
    settings = Settings(small=small, prefix_tokens=args.prefix or (128 if small else 2048),
                        steps=args.steps or (2 if small else None),
                        gen_tokens=args.gen_tokens or (64 if small else 1024),
                        deadline=time.monotonic() + args.deadline, work=work)
    try:
        return run(settings)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
