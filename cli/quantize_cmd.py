"""`diffgemma quantize SRC DST`: write a 4-bit (NF4) copy of a DiffusionGemma checkpoint."""

from __future__ import annotations

import sys
import time

import typer

from diffgemma.cli.errors import FileProblem, guarded


def quantize(
    src: str = typer.Argument(..., help="Unquantized checkpoint: a directory or a Hugging Face id in the cache."),
    dst: str = typer.Argument(..., help="Directory to write (must not exist or be empty)."),
    keep_attention: bool = typer.Option(False, "--keep-attention",
                                        help="Keep attention projections in bf16 (~1.5 GB more)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
) -> None:
    """Quantize the experts and the linear layers (with bitsandbytes) to 4-bit NF4, blocks of 64, and write a checkpoint that loads fast.

    Safetensors checkpoints are read one tensor at a time, so this needs little memory beyond the 4-bit result. Embeddings, norms, the router and the vision tower stay in the checkpoint's dtype.
    """  # noqa: E501 - one line per paragraph: Rich wraps it to the terminal
    @guarded
    def body() -> None:
        from diffgemma.training.quantize import QuantizeError, quantize_checkpoint, quantized_size_line

        started = time.perf_counter()

        def progress(message: str) -> None:
            if not quiet:
                print(f"diffgemma: {message}", file=sys.stderr, flush=True)

        try:
            out = quantize_checkpoint(src, dst, progress=progress,
                                      keep=("self_attn",) if keep_attention else ())
        except QuantizeError as exc:
            raise FileProblem(str(exc)) from None
        elapsed = time.perf_counter() - started
        print(f"wrote {out} ({quantized_size_line(out)}) in {elapsed:.1f}s")

    body()


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command(
    "quantize",
    epilog="Examples:\n\n  diffgemma quantize google/diffusiongemma-26B-A4B-it ~/models/dg-nf4\n\n"
    "  diffgemma serve --model ~/models/dg-nf4",
)(quantize)
