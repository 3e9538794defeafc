"""Build a byte-level BPE tokenizer with Gemma 4's special-token names.

Used by the tiny test checkpoint and by diffgemma-mini. Byte-level BPE means every string
round-trips exactly (no unknown tokens, whitespace kept), which the infill joins rely on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Ids 0..3 match Gemma's layout (pad 0, eos 1, bos 2, unk 3); the turn markers follow.
SPECIAL_TOKENS: list[str] = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<|turn>",
    "<turn|>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path | str) -> None:
    """Train a byte-level BPE on ``texts`` and save it as a transformers tokenizer in ``out_dir``.

    A newline is always a token of its own. The engine heals a prompt that ends in bare
    indentation back to its newline and lets the model write the indentation
    (``runtime.prompt.split_heal``); with the plain byte-level pre-tokenizer a newline is glued
    to the next line's indentation, so a prompt ending in a lone newline would be unlike
    anything seen in training. Splitting newlines off first makes the healed prompt ordinary.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=["<|turn>", "<turn|>"],
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out_dir))
