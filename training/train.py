"""Train diffgemma-mini: a small DiffusionGemma, from scratch, on the Python standard library.

    python -m diffgemma.training.train OUT_DIR [--preset cpu|gpu|micro] [--steps N] [--seed S]

The objective is the one DiffusionGemma's sampler expects. The encoder reads a clean code
prefix into its KV cache; the canvas holds the next ``canvas_length`` tokens, each replaced by
a uniformly random vocabulary token with probability t (t ~ U(0, 1), drawn per example); the
decoder predicts the clean canvas. On half of the batches the decoder first runs without
self-conditioning and its detached logits are fed back as ``self_conditioning_logits`` to a
second pass, as the sampler does from its second step on.

Data: the ``.py`` files of the running interpreter's standard library (PSF license), minus test
suites and generated tables, less a fixed held-out set that is never trained on (see
``diffgemma.training.corpus``).

Seeded and reproducible for a given preset, seed, standard library and thread count. The loss
curve (step, loss, elapsed seconds) goes to ``OUT_DIR/training_log.csv``; the checkpoint
(weights, config, generation config, tokenizer) is written every ``--save-every`` steps and at
the end, so a partial model always exists.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from diffgemma.training.corpus import read_texts, split_files, stdlib_root
from diffgemma.training.objective import diffusion_loss, encode_stream, noise_canvas, sample_batch
from diffgemma.training.tiny import set_generation_defaults, tiny_config
from diffgemma.training.tokenizer_build import train_tokenizer


@dataclass(frozen=True)
class Preset:
    """Model and schedule sizes. ``cpu`` fits a 2-core CPU in under an hour; ``gpu`` is for one CUDA GPU."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    num_experts: int
    top_k_experts: int
    moe_intermediate_size: int
    intermediate_size: int
    vocab_size: int
    canvas_length: int
    sliding_window: int
    batch_size: int
    steps: int
    lr: float
    warmup: int
    prefix_lengths: tuple[int, ...] = (32, 64, 128, 256)
    self_conditioning_prob: float = 0.5
    infill_prob: float = 0.0  # share of examples noised like an infill canvas (see noise_canvas)
    loss_positions: str = "all"  # "all" or "noised" (see diffusion_loss)
    weight_decay: float = 0.01
    min_lr_ratio: float = 0.1


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, num_experts=4, top_k_experts=2,
        moe_intermediate_size=128, intermediate_size=256, vocab_size=4096, canvas_length=32,
        sliding_window=64, batch_size=16, steps=3000, lr=2e-3, warmup=100,
        prefix_lengths=(32, 64, 128, 192),
    ),
    "gpu": Preset(
        hidden_size=512, num_layers=12, num_heads=8, num_kv_heads=4, num_experts=8, top_k_experts=2,
        moe_intermediate_size=512, intermediate_size=1024, vocab_size=8192, canvas_length=64,
        sliding_window=256, batch_size=64, steps=20000, lr=1e-3, warmup=500,
        prefix_lengths=(64, 128, 256, 512),
    ),
    # For tests: a few steps in well under a second each.
    "micro": Preset(
        hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, num_experts=2, top_k_experts=1,
        moe_intermediate_size=16, intermediate_size=64, vocab_size=300, canvas_length=8,
        sliding_window=8, batch_size=4, steps=4, lr=3e-3, warmup=1, prefix_lengths=(8, 16),
    ),
}


def model_config(preset: Preset):
    """The tiny checkpoint's structure (``tiny_config``) at the preset's sizes."""
    head_dim = preset.hidden_size // preset.num_heads
    pattern = ["sliding_attention", "sliding_attention", "full_attention"]
    layer_types = [pattern[i % 3] for i in range(preset.num_layers)]
    layer_types[-1] = "full_attention"  # the last layer always sees the whole prefix
    return tiny_config(
        canvas_length=preset.canvas_length,
        vocab_size=preset.vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        head_dim=head_dim,
        global_head_dim=head_dim,
        num_global_key_value_heads=preset.num_kv_heads,
        sliding_window=preset.sliding_window,
        layer_types=layer_types,
        num_experts=preset.num_experts,
        top_k_experts=preset.top_k_experts,
        moe_intermediate_size=preset.moe_intermediate_size,
    )


def lr_at(step: int, preset: Preset, total: int, time_progress: float = 0.0) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio``; ``time_progress`` (0..1) can run it ahead."""
    if step < preset.warmup:
        return preset.lr * (step + 1) / preset.warmup
    progress = min(1.0, max(time_progress, (step - preset.warmup) / max(1, total - preset.warmup)))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return preset.lr * (preset.min_lr_ratio + (1 - preset.min_lr_ratio) * cosine)


def save_checkpoint(model: Any, out: Path, dtype: str) -> None:
    import torch

    weights_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    # A converted copy (tied weights stay tied): the model being trained keeps full precision.
    copy.deepcopy(model).to(weights_dtype).save_pretrained(str(out))


@dataclass
class TrainResult:
    out_dir: Path
    losses: list[tuple[int, float, float]]
    parameters: int
    seconds: float
    steps: int


@dataclass
class _Run:
    """What every training step reads: the model, its optimizer, the token stream and the sampling generator."""

    model: Any
    optimizer: Any
    stream: Any
    gen: Any
    preset: Preset
    device: str


def _training_texts(out: Path, root: Path, files: list[str] | None) -> tuple[list[str], list[str]]:
    """(training files, their texts); the file list is written to ``out/training_files.txt``."""
    train_files = files if files is not None else split_files(root)[0]
    texts = read_texts(root, train_files)
    # The exact training file list, so anyone can check that no held-out file was used.
    (out / "training_files.txt").write_text("".join(f"{rel}\n" for rel in train_files))
    if not texts:
        raise ValueError(f"no training files found under {root}")
    return train_files, texts


def _tokenizer(out: Path, texts: list[str], vocab_size: int, init_from: Path | str | None) -> Any:
    """A tokenizer trained on ``texts``, or the one of the checkpoint a run continues from, saved in ``out``."""
    from transformers import AutoTokenizer

    if init_from is None:
        train_tokenizer(texts, vocab_size, out)
    else:  # continue a run: same tokenizer, same weights, a fresh schedule
        init = Path(init_from)
        if init.resolve() != out.resolve():
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                if (init / name).is_file():
                    shutil.copyfile(init / name, out / name)
    return AutoTokenizer.from_pretrained(str(out))


def _model(preset: Preset, init_from: Path | str | None, device: str) -> Any:
    """A fresh model at the preset's sizes, or the checkpoint ``init_from`` in full precision, in train mode."""
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion

    if init_from is None:
        model = DiffusionGemmaForBlockDiffusion(model_config(preset))
    else:
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(init_from), dtype=torch.float32)
    set_generation_defaults(model)
    # transformers wraps ``PreTrainedModel.to`` in functools.wraps, which mypy reads as an unbound
    # function taking the model first.
    model.to(device).train()  # type: ignore[arg-type]
    return model


def _optimizer(model: Any, preset: Preset) -> Any:
    """AdamW; weight decay on matrices only, not on norms and biases."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": preset.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=preset.lr, betas=(0.9, 0.98),
    )


def _train_step(run: _Run, lr: float) -> float:
    """One optimizer step on a fresh noised batch at learning rate ``lr``; returns the loss."""
    import torch

    preset, gen, device = run.preset, run.gen, run.device
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    prefix_len = preset.prefix_lengths[int(torch.randint(0, len(preset.prefix_lengths), (1,), generator=gen))]
    prefix, clean = sample_batch(run.stream, preset.batch_size, prefix_len, preset.canvas_length, gen)
    noisy = noise_canvas(clean, preset.vocab_size, gen, preset.infill_prob)
    self_condition = bool(torch.rand(1, generator=gen) < preset.self_conditioning_prob)
    loss = diffusion_loss(run.model, prefix.to(device), clean.to(device), noisy.to(device), self_condition,
                          preset.loss_positions)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.optimizer.step()
    return float(loss.detach())


def _train_loop(
    run: _Run,
    out: Path,
    *,
    max_minutes: float | None,
    time_budget: float | None,
    save_every: int,
    log_every: int,
    save_dtype: str,
    log: Callable[[str], None] | None,
) -> list[tuple[int, float, float]]:
    """Every step of the schedule (or until a time limit), logged to ``out/training_log.csv``."""
    preset = run.preset
    losses: list[tuple[int, float, float]] = []
    train_started = time.monotonic()
    window: list[float] = []
    with (out / "training_log.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "lr", "elapsed_s"])
        for step in range(preset.steps):
            time_progress = (time.monotonic() - train_started) / (time_budget * 60) if time_budget else 0.0
            if time_progress >= 1.0:
                if log:
                    log(f"time budget of {time_budget} min used at step {step}; stopping")
                break
            lr = lr_at(step, preset, preset.steps, time_progress)
            value = _train_step(run, lr)
            elapsed = time.monotonic() - train_started
            losses.append((step, value, elapsed))
            window.append(value)
            if (step + 1) % log_every == 0 or step == 0:
                writer.writerow([step, f"{sum(window) / len(window):.4f}", f"{lr:.2e}", f"{elapsed:.1f}"])
                handle.flush()
                if log:
                    log(f"step {step + 1}/{preset.steps} loss {sum(window) / len(window):.3f} "
                        f"({elapsed / (step + 1):.2f}s/step)")
                window = []
            if save_every and (step + 1) % save_every == 0:
                run.model.eval()
                save_checkpoint(run.model, out, save_dtype)
                run.model.train()
            if max_minutes is not None and elapsed > max_minutes * 60:
                if log:
                    log(f"time budget of {max_minutes} min reached at step {step + 1}; stopping")
                break
    return losses


def train(
    out_dir: Path | str,
    preset: Preset,
    *,
    seed: int = 0,
    data_root: Path | None = None,
    files: list[str] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    max_minutes: float | None = None,
    time_budget: float | None = None,
    init_from: Path | str | None = None,
    save_every: int = 200,
    log_every: int = 10,
    save_dtype: str = "bf16",
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a model with ``preset`` and write the checkpoint to ``out_dir``.

    ``max_minutes`` stops early (the schedule is cut off); ``time_budget`` (minutes) instead makes
    the learning-rate schedule follow wall time as well as steps, so a run on a loaded machine
    still anneals and ends in time. Only a run without ``time_budget`` is step-for-step
    reproducible. ``init_from`` continues from a checkpoint (its weights and tokenizer) with a
    fresh warmup and schedule.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    root = data_root or stdlib_root()
    train_files, texts = _training_texts(out, root, files)

    started = time.monotonic()
    stream = encode_stream(_tokenizer(out, texts, preset.vocab_size, init_from), texts)
    if log:
        log(f"{len(texts)} files, {stream.numel()} tokens, tokenizer in {time.monotonic() - started:.0f}s")
    model = _model(preset, init_from, device)
    parameters = sum(p.numel() for p in model.parameters())
    run = _Run(model, _optimizer(model, preset), stream, torch.Generator().manual_seed(seed), preset, device)
    (out / "training_args.json").write_text(
        json.dumps({"preset": asdict(preset), "seed": seed, "files": len(train_files),
                    "tokens": stream.numel(), "parameters": parameters, "device": device,
                    "init_from": str(init_from) if init_from else None, "time_budget_min": time_budget,
                    "threads": torch.get_num_threads()}, indent=2) + "\n"
    )
    losses = _train_loop(run, out, max_minutes=max_minutes, time_budget=time_budget, save_every=save_every,
                         log_every=log_every, save_dtype=save_dtype, log=log)
    model.eval()
    save_checkpoint(model, out, save_dtype)
    seconds = time.monotonic() - started
    tail = [v for _, v, _ in losses[-50:]] or [float("nan")]
    summary = {"steps": len(losses), "seconds": round(seconds, 1), "parameters": parameters,
               "final_loss": round(sum(tail) / len(tail), 4)}
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(out_dir=out, losses=losses, parameters=parameters, seconds=seconds, steps=len(losses))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffgemma.training.train", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="directory to write the checkpoint into")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model/schedule size (default: gpu when CUDA is available, else cpu)")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop early (checkpoint kept) after this")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="minutes: anneal the learning rate by wall time too and stop when it is used")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="continue from this checkpoint (weights + tokenizer) with a fresh schedule")
    parser.add_argument("--infill-prob", type=float, default=None,
                        help="share of examples noised like an infill canvas (override the preset)")
    parser.add_argument("--loss-positions", choices=("all", "noised"), default=None,
                        help="score every canvas position or only the noised ones (override the preset)")
    parser.add_argument("--lr", type=float, default=None, help="override the preset's peak learning rate")
    parser.add_argument("--save-every", type=int, default=200, help="write the checkpoint every N steps")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--data", type=Path, default=None, help="source root (default: this Python's stdlib)")
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preset = PRESETS[args.preset or ("gpu" if device.startswith("cuda") else "cpu")]
    if args.steps is not None:
        preset = replace(preset, steps=args.steps)
    if args.batch_size is not None:
        preset = replace(preset, batch_size=args.batch_size)
    if args.lr is not None:
        preset = replace(preset, lr=args.lr)
    if args.loss_positions is not None:
        preset = replace(preset, loss_positions=args.loss_positions)
    if args.infill_prob is not None:
        if not 0.0 <= args.infill_prob <= 1.0:
            print("error: --infill-prob must be between 0 and 1", file=sys.stderr)
            return 2
        preset = replace(preset, infill_prob=args.infill_prob)
    if args.init_from is not None and not (args.init_from / "config.json").is_file():
        print(f"error: no checkpoint in {args.init_from}", file=sys.stderr)
        return 2
    if args.data is not None and not args.data.is_dir():
        print(f"error: data root {args.data} is not a directory", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        result = train(args.out_dir, preset, seed=args.seed, data_root=args.data, device=device,
                       threads=args.threads, max_minutes=args.max_minutes,
                       time_budget=args.time_budget, init_from=args.init_from, save_every=args.save_every, log=log)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log(f"trained {result.parameters:,} parameters for {result.steps} steps in {result.seconds / 60:.1f} min; "
        f"checkpoint in {result.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
