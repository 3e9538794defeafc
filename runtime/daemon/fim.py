"""Fill-in-the-middle templates inside a completion ``prompt`` (torch-free).

OpenAI-style clients that send no ``suffix`` (Continue's openai and llama.cpp providers,
llama.vscode's OpenAI mode) wrap the code around the cursor in the FIM template of the model they
think they talk to. DiffusionGemma has no FIM tokens: the daemon takes the template apart into the
prefix, suffix and extra files it understands, so the answer joins the code after the cursor
instead of continuing the template's text.

Families recognised (what the prompt holds -> what we take):

- StarCoder/SantaCoder  ``<fim_prefix>P<fim_suffix>S<fim_middle>``
- Qwen/CodeGemma        ``<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>``
- DeepSeek              ``<｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>``
- CodeLlama             ``<PRE> P <SUF>S <MID>``
- Codestral             ``[SUFFIX]S[PREFIX]P`` (suffix first)
- repository context ahead of any of them: ``<|repo_name|>name``, then files as
  ``<|file_sep|>path\\ntext`` (Qwen, StarCoder2 without the bars) or ``<|file_separator|>path\\ntext``
  (CodeGemma); the last file is the one being edited, its first line names it.

A prompt with none of these markers is not a template: it stays a plain prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from diffgemma.runtime.api.protocol import ExtraFile


@dataclass
class FimParts:
    prefix: str
    suffix: str
    extra: list[ExtraFile] = field(default_factory=list)
    path: str | None = None  # the edited file's name, when the template gave one
    family: str = ""


# (family, prefix marker, suffix marker, middle marker) for the prefix-suffix-middle families.
_PSM: tuple[tuple[str, str, str, str], ...] = (
    ("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
)
_FILE_SEPARATORS = ("<|file_separator|>", "<|file_sep|>", "<file_sep>")
_REPO_NAMES = ("<|repo_name|>", "<repo_name>")
_SEPARATOR_RE = re.compile("|".join(re.escape(s) for s in _FILE_SEPARATORS))
_LEADING_NOISE = ("<s>", "<|endoftext|>", "<｜begin▁of▁sentence｜>", "<bos>")


def _strip_leading(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for token in _LEADING_NOISE:
            if text.startswith(token):
                text, changed = text[len(token):], True
    return text


def _context(head: str) -> tuple[list[ExtraFile], str | None, str]:
    """Split the text ahead of the FIM part into other files, the edited file's path, and the
    text of the edited file that comes before the prefix marker (usually nothing)."""
    for marker in _REPO_NAMES:
        if head.startswith(marker):
            # The repository name runs to the end of its line or to the first file (StarCoder2
            # writes ``<repo_name>name<file_sep>``); the files follow.
            rest = head[len(marker):]
            found = _SEPARATOR_RE.search(rest)
            newline = rest.find("\n")
            if found and (newline < 0 or found.start() < newline):
                head = rest[found.start():]
            else:
                head = rest[newline + 1:] if newline >= 0 else ""
    pieces = _SEPARATOR_RE.split(head)
    if len(pieces) == 1:
        return [], None, head
    extra: list[ExtraFile] = []
    for piece in pieces[1:-1]:
        path, _, text = piece.partition("\n")
        extra.append(ExtraFile(path=path.strip(), text=text))
    path, line_end, lead = pieces[-1].partition("\n")
    # ``<|file_sep|>path\n<|fim_prefix|>``: the last piece is the edited file's name line.
    return extra, path.strip() or None, lead if line_end else ""


def _psm(prompt: str) -> FimParts | None:
    for family, pre, suf, mid in _PSM:
        at = prompt.find(pre)
        if at < 0 or suf not in prompt[at:]:
            continue
        head, body = prompt[:at], prompt[at + len(pre):]
        prefix, _, rest = body.partition(suf)
        suffix = rest.split(mid, 1)[0]
        extra, path, lead = _context(_strip_leading(head))
        return FimParts(prefix=lead + prefix, suffix=suffix, extra=extra, path=path, family=family)
    return None


def _codellama(prompt: str) -> FimParts | None:
    at = prompt.find("<PRE>")
    if at < 0 or "<SUF>" not in prompt[at:]:
        return None
    body = prompt[at + len("<PRE>"):]
    prefix, _, rest = body.partition("<SUF>")
    suffix = rest.split("<MID>", 1)[0]
    # The template puts one space after <PRE> and before <SUF> and <MID>: they are not code.
    prefix = prefix.removeprefix(" ").removesuffix(" ")
    suffix = suffix.removesuffix(" ")
    extra, path, lead = _context(_strip_leading(prompt[:at]))
    return FimParts(prefix=lead + prefix, suffix=suffix, extra=extra, path=path, family="codellama")


def _codestral(prompt: str) -> FimParts | None:
    at = prompt.find("[SUFFIX]")
    if at < 0 or "[PREFIX]" not in prompt[at:]:
        return None
    suffix, _, prefix = prompt[at + len("[SUFFIX]"):].partition("[PREFIX]")
    extra, path, lead = _context(_strip_leading(prompt[:at]))
    return FimParts(prefix=lead + prefix, suffix=suffix, extra=extra, path=path, family="codestral")


def parse_fim_prompt(prompt: str) -> FimParts | None:
    """The prefix, suffix and context a FIM template holds; None for a prompt that is no template.

    The family whose prefix marker comes first wins, so a template quoting another family's marker
    inside its code is still read by its own markers.
    """
    found = [p for p in (_psm(prompt), _codellama(prompt), _codestral(prompt)) if p is not None]
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    markers = {"qwen": "<|fim_prefix|>", "starcoder": "<fim_prefix>", "deepseek": "<｜fim▁begin｜>",
               "codellama": "<PRE>", "codestral": "[SUFFIX]"}
    return min(found, key=lambda p: prompt.find(markers[p.family]))


def has_context_markers(prompt: str) -> bool:
    return any(m in prompt for m in (*_FILE_SEPARATORS, *_REPO_NAMES))


def parse_context_prompt(prompt: str) -> FimParts | None:
    """A prompt with repository/file markers but no FIM part: the files become extra context and
    the last file's text is the prefix (plain continuation)."""
    if not has_context_markers(prompt):
        return None
    extra, path, lead = _context(_strip_leading(prompt))
    return FimParts(prefix=lead, suffix="", extra=extra, path=path, family="context")


def split_prompt(prompt: str) -> FimParts:
    """Whatever a completion ``prompt`` holds, as prefix/suffix/extra (plain text: all prefix)."""
    return parse_fim_prompt(prompt) or parse_context_prompt(prompt) or FimParts(prefix=prompt, suffix="")
