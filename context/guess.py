"""The language of a buffer from its text alone, for a buffer with no file name (torch-free).

A piped buffer or a client that names no language still deserves syntax repair and the syntax
gate, and so a grammar. `guess_language` scores the text against a few cues per language (lines
that only that language writes so: ``def f(...):``, ``#include``, ``fn name(``, ``:=``...) and
answers only when one language leads clearly; else None, and nothing is judged. A wrong guess costs
more than none (the gate would hold back answers that are fine in the real language), so it
abstains rather than guesses. `benchmarks/bench_language_guess.py` measures it next to pygments'
``guess_lexer`` on snippets of real files.
"""

from __future__ import annotations

import re

# language -> (pattern, weight): each pattern counts once per line it matches (at most 5 lines)
_CUES: dict[str, tuple[tuple[str, float], ...]] = {
    "python": ((r"^\s*def \w+\(.*\)( -> .+)?:\s*(#.*)?$", 3), (r"^\s*class \w+(\(.*\))?:\s*$", 3),
               (r"^\s*(from [\w.]+ import \w|import [\w.]+(\s+as \w+)?\s*$)", 2), (r"\bself\.\w", 1),
               (r"^\s*(elif .*|else|try|finally|except( .*)?):\s*$", 2), (r"^\s*(if|for|while|with) .*:\s*$", 1),
               (r"\b(None|True|False)\b", 0.5), (r"^\s*(return|raise|yield|pass)\b", 0.5),
               (r'^\s*("""|\'\'\')', 1), (r"^\s*@\w[\w.]*(\(.*\))?\s*$", 1)),
    "javascript": ((r"\bfunction\s*\w*\s*\(", 2), (r"\b(const|let|var) \w+\s*=", 1.5), (r"=>\s*[{(]?", 1),
                   (r"\bconsole\.\w+\(", 2), (r"\brequire\(['\"]", 2), (r"^\s*(export|import) .*from ['\"]", 1.5),
                   (r"\bdocument\.|\bwindow\.", 1), (r"===|!==", 1), (r"^\s*module\.exports", 2)),
    "typescript": ((r"^\s*(export )?(interface|type) \w+(<.*>)?\s*[={]", 3),
                   (r"\b\w+\??: (string|number|boolean|any|void|unknown|never)\b", 2),
                   (r"^\s*(public|private|protected|readonly) \w+", 1), (r"\bas (string|number|any)\b", 2),
                   (r"^\s*import .* from ['\"]", 1)),
    "c": ((r"^\s*#\s*(include|define|ifn?def|endif|if|pragma)\b", 2),
          (r"^\s*(static |extern |const )*(unsigned |signed )?(int|void|char|long|short|double|float|size_t|"
           r"struct \w+)\s*\**\s*\w+\s*\(", 2),
          (r"\b(printf|malloc|free|sizeof|memcpy|strlen)\s*\(", 1.5), (r"->\w", 1), (r";\s*$", 0.3),
          (r"^\s*(typedef|struct) ", 1.5), (r"\bNULL\b", 1)),
    "cpp": ((r"\bstd::", 3), (r"^\s*template\s*<", 3), (r"^\s*namespace \w*", 2.5), (r"\w::\w", 1),
            (r"^\s*(class|struct) \w+\s*(final\s*)?(:\s*(public|private|protected)|\{|$)", 1.5),
            (r"\b(nullptr|constexpr|auto|override|virtual)\b", 1.5), (r"^\s*#\s*include\s*<\w+>", 1),
            (r"\b(public|private|protected):", 1.5)),
    "go": ((r"^package \w+\s*$", 4), (r"^\s*func (\(.*\) )?\w+\(", 3), (r":=", 1.5), (r"\bfmt\.\w", 2),
           (r"^\s*(import \(|type \w+ struct\b)", 2), (r"\berr != nil\b", 2)),
    "rust": ((r"^\s*(pub(\(\w+\))? )?(async )?fn \w+", 3), (r"\blet (mut )?\w+", 1.5), (r"^\s*(impl|trait)\b", 2),
             (r"^\s*use \w+(::\w+)+", 2), (r"\b\w+!\(", 1), (r"&(mut )?self\b", 2), (r"\bSome\(|\bOk\(|\bErr\(", 1),
             (r"^\s*#\[\w", 2)),
    "java": ((r"^\s*(public|private|protected)( static)?( final)? [\w<>\[\], ]+ \w+\s*\(", 2.5),
             (r"^\s*(public )?(final )?(class|interface|enum) \w+", 1.5), (r"\bSystem\.out\.", 3),
             (r"^\s*import java\.", 4), (r"^\s*@Override\b", 3), (r"^\s*package [\w.]+;", 3),
             (r"\bnew \w+(<.*>)?\(", 1)),
    "ruby": ((r"^\s*def [\w.?!]+(\(.*\))?\s*$", 2), (r"^\s*end\s*$", 1.5), (r"^\s*require ['\"]", 2),
             (r"\bdo( \|[\w, ]+\|)?\s*$", 2), (r"^\s*(module|class) [A-Z]\w*(\s*<\s*\w+)?\s*$", 1),
             (r"\battr_(reader|accessor|writer)\b", 3), (r"\bputs\b", 1), (r"\belsif\b", 2), (r"\.each\b", 1)),
    "bash": ((r"^#!.*\b(ba)?sh\b", 5), (r"^\s*(fi|esac|done)\s*$", 2.5), (r"^\s*(if|while) \[", 2),
             (r"\bthen\s*$", 1.5),
             (r"\$\{?\w+\}?", 0.5), (r"^\s*(echo|export|local) ", 1), (r"^\s*\w+\(\)\s*\{", 1.5), (r"\$\(", 1)),
    "lua": ((r"^\s*local (function )?\w+", 2.5), (r"^\s*function [\w.:]+\(", 1.5), (r"\bthen\s*$", 1),
            (r"^\s*end\s*$", 1), (r"~=", 2), (r"\bnil\b", 1), (r"\.\.", 0.5)),
    "perl": ((r"^\s*my [$@%]", 3), (r"^\s*use (strict|warnings)\b", 4), (r"^\s*sub \w+", 2), (r"\$\w+->", 1.5),
             (r"=~ [ms]?/", 2), (r"^\s*package [\w:]+;", 2), (r"[$@%]\w+", 0.3)),
    "html": ((r"^\s*<(!DOCTYPE|html|head|body|div|p|span|a|ul|li|table|tr|td|script|style|meta|link|h\d|br|img|"
              r"form|input|section|nav)\b[^>]*>", 2), (r"</\w+>\s*$", 1.5), (r"^\s*<!--", 1)),
    "css": ((r"^\s*[.#]?[\w-][\w\s.#:>,+~-]{0,80}\{\s*$", 1.5),
            (r"^\s*[\w-]+\s*:\s*[^;{}]+;\s*$", 1.5), (r"^\s*@(media|import|font-face|keyframes)\b", 2)),
    "json": ((r'^\s*"[^"]+"\s*:\s*', 1.5), (r"^\s*[\]}],?\s*$", 1)),
    "yaml": ((r"^\s*-?\s*[\w.-]+:(\s+[^{;]*)?$", 1.2), (r"^\s*-\s+\S", 0.8), (r"^---\s*$", 2)),
    "markdown": ((r"^#{1,6} \S", 2.5), (r"^```", 2), (r"^\s*[-*] \S", 0.8), (r"\[[^\]]+\]\([^)]+\)", 1.5),
                 (r"^\s*\d+\. \S", 0.8), (r"\*\*\w", 1)),
    "php": ((r"<\?php", 5), (r"\$this->", 3), (r"^\s*(public|private|protected) (static )?function\b", 3),
            (r"^\s*(namespace|use) [\w\\]+;", 2), (r"\$\w+\s*=", 1)),
}
# How many lines of a cue count, and how far the leader must be ahead of the next language.
_PER_CUE = 5
_MIN_SCORE = 3.0
_MIN_LEAD = 1.5

_COMPILED = {lang: [(re.compile(p, re.MULTILINE), w) for p, w in cues] for lang, cues in _CUES.items()}


def scores(text: str) -> dict[str, float]:
    """Each language's cue score for ``text``."""
    return {lang: sum(min(len(pattern.findall(text)), _PER_CUE) * weight for pattern, weight in cues)
            for lang, cues in _COMPILED.items()}


def guess_language(text: str) -> str | None:
    """The grammar name ``text`` is most likely written in, or None when no language leads clearly."""
    sample = text if len(text) <= 20_000 else text[:10_000] + "\n" + text[-10_000:]
    ranked = sorted(scores(sample).items(), key=lambda kv: kv[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    if top < _MIN_SCORE or top < _MIN_LEAD * second:
        return None
    return best
