"""The checkpoint's tokenizer and the facts its files hold, read without torch or transformers.

The vLLM server runs the model; the daemon in front of it lays out canvases in token ids, so it
tokenizes exactly as the local engine does (`runner.ModelRunner`): user text never parsed for
special-token names, our own prompt scaffolding with them, special tokens left out of decoded
text. `tokenizers` reads the checkpoint's tokenizer.json, the same file transformers' fast
tokenizer is built from; the special tokens are the ones tokenizer_config.json names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffgemma.runtime.engine.loading import ModelLoadError, resolve_model_path
from diffgemma.runtime.engine.prompt import chat_parts

# tokenizer_config.json's names of single special tokens, and of lists of them
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "sep_token", "cls_token")
_SPECIAL_LISTS = ("extra_special_tokens", "additional_special_tokens")


@dataclass(frozen=True)
class Checkpoint:
    """What the daemon needs to know about the model the vLLM servers run."""

    name: str  # as the user gave it (--model)
    path: Path
    canvas_length: int
    vocab_size: int
    context_length: int
    eos_ids: tuple[int, ...]
    default_steps: int  # generation_config's max_denoising_steps (the model's own default: 48)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(int(v) for v in value)
    return (int(value),)


def read_checkpoint(name: str) -> Checkpoint:
    """The checkpoint's facts from its config.json and generation_config.json (ModelLoadError when
    it cannot be found or is not a DiffusionGemma checkpoint)."""
    path = resolve_model_path(name)
    config = _read_json(path / "config.json")
    gen = _read_json(path / "generation_config.json")
    text = config.get("text_config") or {}
    canvas = config.get("canvas_length")
    vocab = text.get("vocab_size") or config.get("vocab_size")
    if not isinstance(canvas, int) or not isinstance(vocab, int):
        raise ModelLoadError(f"{path / 'config.json'} has no canvas_length or vocab_size: "
                             f"not a DiffusionGemma checkpoint")
    return Checkpoint(name=name, path=path, canvas_length=canvas, vocab_size=vocab,
                      context_length=int(text.get("max_position_embeddings") or 0),
                      eos_ids=_ids(gen.get("eos_token_id") or text.get("eos_token_id")),
                      default_steps=int(gen.get("max_denoising_steps") or 48))


class CheckpointTokenizer:
    """The checkpoint's tokenizer.json, tokenizing as `runner.ModelRunner` does. Thread-safe."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer  # the Rust tokenizer alone: no torch, no transformers

        file = path / "tokenizer.json"
        if not file.is_file():
            raise ModelLoadError(f"no tokenizer.json in {path}: the vLLM engine reads the checkpoint's tokenizer")
        # Two instances, so no call ever flips a setting another thread is reading: user text
        # with special-token names taken as text, our own scaffolding with them taken as markup.
        self._text = Tokenizer.from_file(str(file))
        self._text.encode_special_tokens = True
        self._markup = Tokenizer.from_file(str(file))
        settings = _read_json(path / "tokenizer_config.json")
        names = [settings.get(k) for k in _SPECIAL_KEYS]
        names += [n for k in _SPECIAL_LISTS for n in settings.get(k) or []]
        found = [self._markup.token_to_id(n if isinstance(n, str) else n.get("content", "")) for n in names if n]
        self.special_ids = frozenset(i for i in found if i is not None)
        bos = settings.get("bos_token")
        self.bos_id: int | None = self._markup.token_to_id(bos) if isinstance(bos, str) else None

    def encode_text(self, text: str) -> list[int]:
        """User text: never parse it for special-token names."""
        return list(self._text.encode(text, add_special_tokens=False).ids) if text else []

    def encode_header(self, text: str) -> list[int]:
        """Our own prompt scaffolding: special-token names (turn markers) are meant."""
        return list(self._markup.encode(text, add_special_tokens=False).ids) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        kept = [int(i) for i in ids if int(i) not in self.special_ids]
        return str(self._markup.decode(kept, skip_special_tokens=True))

    def token_id(self, name: str) -> int | None:
        return self._markup.token_to_id(name)

    def prompt_ids(self, header: str, prefix: str) -> list[int]:
        ids = [self.bos_id] if self.bos_id is not None else []
        return ids + self.encode_header(header) + self.encode_text(prefix)

    def chat_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt of a chat: turn markers as special tokens, the messages as plain text."""
        ids = [self.bos_id] if self.bos_id is not None else []
        for text, markup in chat_parts(messages):
            ids += self.encode_header(text) if markup else self.encode_text(text)
        return ids
