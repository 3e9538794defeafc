"""Write a tiny random-weight DiffusionGemma checkpoint for tests and demos.

    python -m diffgemma.training.tiny PATH [--seed N]

The checkpoint has the real architecture (encoder + decoder, sliding and full attention,
MoE experts, self-conditioning) at toy sizes, a tiny vision tower (without one, the
default 167M-parameter tower appears), and a byte-level BPE tokenizer with Gemma 4's
special-token names. It loads through the same ``from_pretrained`` path as real weights.
The same seed writes the same weights and tokenizer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diffgemma.training.tokenizer_build import BOS_ID, EOS_ID, PAD_ID, train_tokenizer

TINY_VOCAB = 512
TINY_CANVAS = 32

# A fixed corpus, so the tokenizer does not depend on which Python runs the build.
_CORPUS = '''
import os
import sys
from pathlib import Path


def add(a, b):
    """Return the sum of a and b."""
    return a + b


def fibonacci(n: int) -> int:
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()

    def __len__(self):
        return len(self.items)


def read_lines(path):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\\n")


for i in range(10):
    print(i, add(i, i * 2))

function greet(name) {
  const message = `Hello, ${name}!`;
  console.log(message);
  return message;
}

fn main() {
    let values: Vec<i32> = (0..10).collect();
    println!("{:?}", values);
}

func Sum(xs []int) int {
	total := 0
	for _, x := range xs {
		total += x
	}
	return total
}
'''


def tiny_config(canvas_length: int = TINY_CANVAS, vocab_size: int = TINY_VOCAB, **text_overrides):
    """The tiny DiffusionGemma config: every architectural feature, toy dimensions."""
    from transformers import DiffusionGemmaConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        global_head_dim=32,
        num_global_key_value_heads=1,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        num_experts=4,
        top_k_experts=2,
        moe_intermediate_size=32,
        max_position_embeddings=8192,
        enable_moe_block=True,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
    )
    text.update(text_overrides)
    return DiffusionGemmaConfig(
        text_config=text,
        vision_config=dict(
            model_type="gemma4_vision",
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
        ),
        canvas_length=canvas_length,
        boi_token_id=7,
        eoi_token_id=8,
        image_token_id=9,
    )


def set_generation_defaults(model: Any) -> None:
    """The sampler settings every checkpoint this package writes (tiny and trained) ships with."""
    gen = model.generation_config
    gen.max_denoising_steps = 16
    gen.t_min, gen.t_max = 0.4, 0.8
    gen.stability_threshold, gen.confidence_threshold = 1, 0.005
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = BOS_ID, EOS_ID, PAD_ID


def write_tiny(path: Path | str, seed: int = 0, canvas_length: int = TINY_CANVAS,
               vocab_size: int = TINY_VOCAB) -> Path:
    """Write the tiny checkpoint (weights, config, generation config, tokenizer) to ``path``.

    ``vocab_size`` sizes the model's vocabulary (the real one is 262,144, for memory benchmarks);
    the tokenizer stays the tiny one, whose ids are the vocabulary's first."""
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(tiny_config(canvas_length=canvas_length, vocab_size=vocab_size)).eval()
    set_generation_defaults(model)
    model.save_pretrained(str(out))
    train_tokenizer([_CORPUS] * 4, TINY_VOCAB, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffgemma.training.tiny", description=__doc__.split("\n")[0])
    parser.add_argument("path", help="directory to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--canvas", type=int, default=TINY_CANVAS, help="canvas length (default 32)")
    args = parser.parse_args(argv)
    out = write_tiny(args.path, seed=args.seed, canvas_length=args.canvas)
    print(f"wrote tiny DiffusionGemma checkpoint to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
