"""Per-token confidence, cut to the text the user gets.

The engine knows a probability for every canvas token (the probability of the final token at
the step that last saw it). The answer's text is not simply those tokens decoded: the healed
indentation is dropped from its start, stop tokens vanish, and the join clean-up may drop a
whole repeated line at either end. `pieces` splits the final text into one piece per token so
that the pieces' texts join exactly to the answer, each with its token's confidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from diffgemma.runtime.engine.types import TokenPiece

# Tokens decoded before each one, so that its text is what it adds (byte-level BPE decodes a
# token the same way after a few tokens of context as after the whole fill).
CONTEXT = 6


def pieces(decode: Callable[[Sequence[int]], str], tokens: Sequence[int], confidence: Sequence[float],
           final: str) -> list[TokenPiece]:
    """Pieces of ``final`` (a substring of ``decode(tokens)``), one per token that shows in it.

    Each token's text is what it adds to the decoded text before it (a character spread over
    several tokens goes with the last of them, at the lowest of their confidences); tokens that
    add nothing (stop tokens) are left out."""
    raw: list[tuple[str, float]] = []
    start_k = 0  # first token of the piece being built (several when a character spans tokens)
    for k in range(len(tokens)):
        ctx = list(tokens[max(0, start_k - CONTEXT): start_k])
        before = decode(ctx)
        text = decode([*ctx, *tokens[start_k: k + 1]])
        if text.endswith("\ufffd") and k + 1 < len(tokens):
            continue  # an unfinished character: it shows with the token that completes it
        added = text[len(before):] if text.startswith(before) else text
        if added:
            raw.append((added, min(float(c) for c in confidence[start_k: k + 1])))
        start_k = k + 1
    joined = "".join(t for t, _ in raw)
    start = 0 if joined.startswith(final) else joined.find(final)
    if start < 0:  # the final text is not a plain cut of the tokens: one piece, the weakest score
        return [TokenPiece(final, min((c for _, c in raw), default=1.0))] if final else []
    end = start + len(final)
    out: list[TokenPiece] = []
    pos = 0
    for text, conf in raw:
        a, b = max(pos, start), min(pos + len(text), end)
        if a < b:
            out.append(TokenPiece(text[a - pos: b - pos], min(1.0, max(0.0, conf))))
        pos += len(text)
    return out

