"""Prompt layout for infill and rewrite requests (torch-free).

The stable parts come first so the prefix cache keeps them across keystrokes:
``<bos>`` + instruction turn (rewrites only) + snippets from other files + the prefix.
Only the tail of the prefix changes while someone types at the cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptParts:
    header: str  # everything before the prefix (instruction, extra files)
    prefix: str  # the code before the hole, minus `healed`
    healed: str  # trailing spaces/tabs moved out of the prompt (see `split_heal`)


def format_extra(extra: Sequence[tuple[str, str]]) -> str:
    """Snippets from other files, each introduced by a path comment line."""
    parts = []
    for path, text in extra:
        body = text if text.endswith("\n") else text + "\n"
        parts.append(f"# file: {path}\n{body}\n")
    return "".join(parts)


def format_instruction(instruction: str | None) -> str:
    """An instruction for a rewrite, as a user turn with Gemma's turn markers."""
    if not instruction:
        return ""
    return f"<|turn>user\nRewrite the marked code: {instruction.strip()}<turn|>\n<|turn>model\n"


def split_heal(prefix: str) -> tuple[str, str]:
    """Move trailing spaces/tabs of the last line out of the prompt.

    Byte-level BPE glues leading spaces onto the next word (``"    return"`` is one or two
    tokens), so a prompt that ends in bare indentation shows the model a token sequence it
    rarely saw. The model regenerates the indentation instead; `strip_heal` removes it again.
    """
    stripped = prefix.rstrip(" \t")
    return stripped, prefix[len(stripped):]


def strip_heal(text: str, healed: str) -> str:
    """Drop the regenerated indentation from the start of the fill (as much of it as matches)."""
    n = 0
    while n < len(healed) and n < len(text) and text[n] == healed[n]:
        n += 1
    return text[n:]


def build_parts(prefix: str, extra: Sequence[tuple[str, str]] = (), instruction: str | None = None) -> PromptParts:
    body, healed = split_heal(prefix)
    return PromptParts(header=format_instruction(instruction) + format_extra(extra), prefix=body, healed=healed)


def chat_parts(messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
    """Chat messages in Gemma's turn format, ending with an open model turn, as (text, is_markup)
    pieces: the turn markers are markup; what the messages say is user text, never parsed for
    special-token names. A system message is folded into the first user turn, as Gemma's own
    template does."""
    parts: list[tuple[str, bool]] = []
    system = ""
    for message in messages:
        role, content = message.get("role", "user"), message.get("content", "")
        if role == "system":
            system += content.strip() + "\n\n"
            continue
        turn = "model" if role == "assistant" else "user"
        if turn == "user" and system:
            content, system = system + content, ""
        parts += [(f"<|turn>{turn}\n", True), (content.strip(), False), ("<turn|>\n", True)]
    return [*parts, ("<|turn>model\n", True)]

