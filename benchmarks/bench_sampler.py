"""Stock vs fused denoising-step sampler, one step's logits at the real vocabulary and canvas.

    python benchmarks/bench_sampler.py [--vocab 262144] [--canvas 256] [--batch 1] [--repeats 3]
                                       [--device cpu|cuda] [--dtype float32|bfloat16]
                                       [--self-conditioning --hidden 2816] [--threads N] [--omp-active]

"Stock" is what transformers' DiffusionGemma step does with the logits (float32 softmax,
multinomial, argmax, Categorical entropy); "fused" is diffgemma.kernels.sampler.fused_sample.
The default input is float32 logits, as the model's softcapping step returns them. The table
shows the best of ``--repeats`` runs and the ratio stock / fused from this one run.

OpenMP threads spin after each parallel region; when the machine has fewer free cores than
runnable threads (a shared box), the spinning worker starves the thread issuing the next
op, and a walk of many cache-sized ops slows down several-fold while the stock path's few
huge ops do not. Unless OMP_WAIT_POLICY is already set, this script sets it to PASSIVE
before torch starts (both paths run under it; the header says which policy was in effect);
``--omp-active`` keeps OpenMP's default to show that effect.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable


def _best_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, (time.perf_counter() - t0) * 1000.0)
    return best


def run(vocab: int, canvas: int, batch: int, repeats: int, device: str, dtype: str,
        self_conditioning: bool, hidden: int) -> dict[str, float]:
    import torch

    from diffgemma.kernels.sampler import fused_sample, reference_sample, self_conditioning_embeddings

    torch.manual_seed(0)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    # softcapped-looking logits: 30 * tanh(z / 30) with a few confident positions
    raw = torch.randn(batch, canvas, vocab, device=device) * 4.0
    raw[:, ::4, 7] += 40.0
    logits = (30.0 * torch.tanh(raw / 30.0)).to(torch_dtype)
    del raw
    temperature = 0.6
    gen = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    # warm up both (allocator, lazy kernels / Triton compilation)
    reference_sample(logits, temperature, gen)
    fused_sample(logits, temperature, gen)
    results = {
        "stock_ms": _best_ms(lambda: reference_sample(logits, temperature, gen), repeats, sync),
        "fused_ms": _best_ms(lambda: fused_sample(logits, temperature, gen), repeats, sync),
    }
    if self_conditioning:
        weight = torch.randn(vocab, hidden, device=device, dtype=torch.bfloat16) * 0.02
        scale = hidden**0.5

        def stock_sc() -> object:
            probs = (logits / temperature).softmax(dim=-1, dtype=torch.float32).to(weight.dtype)
            return torch.matmul(probs, weight) * scale

        def fused_sc() -> object:
            return self_conditioning_embeddings(logits, False, weight, scale, temperature=temperature)

        stock_sc()
        fused_sc()
        results["stock_selfcond_ms"] = _best_ms(stock_sc, repeats, sync)
        results["fused_selfcond_ms"] = _best_ms(fused_sc, repeats, sync)
    return results


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=262_144)
    parser.add_argument("--canvas", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--self-conditioning", action="store_true",
                        help="also time softmax(logits) @ embeddings (heavy on CPU at full size)")
    parser.add_argument("--hidden", type=int, default=2816)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--omp-active", action="store_true",
                        help="leave OpenMP's default (spinning) wait policy instead of PASSIVE")
    args = parser.parse_args(argv)

    if not args.omp_active and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device present; run with --device cpu")
        return 0
    res = run(args.vocab, args.canvas, args.batch, args.repeats, args.device, args.dtype,
              args.self_conditioning, args.hidden)
    print(f"sampler step: batch {args.batch}, canvas {args.canvas}, vocab {args.vocab:,}, "
          f"{args.dtype} logits, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (OpenMP default)')}")
    print(f"{'path':<28}{'ms (best of ' + str(args.repeats) + ')':>20}")
    print(f"{'stock (softmax+multinomial)':<28}{res['stock_ms']:>20.1f}")
    print(f"{'fused':<28}{res['fused_ms']:>20.1f}")
    print(f"ratio stock/fused: {res['stock_ms'] / res['fused_ms']:.2f}x")
    if "stock_selfcond_ms" in res:
        print(f"{'stock self-conditioning':<28}{res['stock_selfcond_ms']:>20.1f}")
        print(f"{'fused self-conditioning':<28}{res['fused_selfcond_ms']:>20.1f}")
        print(f"ratio stock/fused (self-conditioning): "
              f"{res['stock_selfcond_ms'] / res['fused_selfcond_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
