"""The language of a buffer from its text: diffgemma's cue rule next to pygments' ``guess_lexer``.

    python benchmarks/bench_language_guess.py [--root /] [--per-language 25] [--seed 0]

Snippets of 8-40 lines are cut at random from real files on this machine (found under ``--root``
by their extension, which is the truth), a few per file, ``--per-language`` of each language. Each
detector names a language for each snippet or none; the table gives right / wrong / none and the
time per snippet, and the languages each one confuses most. A wrong guess costs more than none
(the syntax gate would judge the answer with the wrong grammar), so "wrong" is the column to read.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from diffgemma.context.guess import guess_language

EXTENSIONS = {"py": "python", "c": "c", "cpp": "cpp", "js": "javascript", "ts": "typescript", "go": "go",
              "rs": "rust", "java": "java", "rb": "ruby", "sh": "bash", "lua": "lua", "pl": "perl", "php": "php",
              "css": "css", "html": "html", "json": "json", "yaml": "yaml", "md": "markdown"}
# pygments lexer name -> grammar name
PYGMENTS = {"Python": "python", "Python 2.x": "python", "C": "c", "C++": "cpp", "JavaScript": "javascript",
            "TypeScript": "typescript", "Go": "go", "Rust": "rust", "Java": "java", "Ruby": "ruby", "Bash": "bash",
            "Lua": "lua", "Perl": "perl", "PHP": "php", "CSS": "css", "HTML": "html", "JSON": "json",
            "YAML": "yaml", "Markdown": "markdown", "HTML+PHP": "php"}
SKIP_DIRS = {"proc", "sys", "dev", "tmp", ".git", "node_modules"}


def files(root: Path, limit: int = 4000) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = collections.defaultdict(list)
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in names:
            lang = EXTENSIONS.get(name.rpartition(".")[2])
            if lang and len(found[lang]) < limit:
                found[lang].append(Path(folder) / name)
    return found


def snippets(root: Path, per_language: int, seed: int) -> Iterator[tuple[str, str]]:
    rng = random.Random(seed)
    for lang, paths in sorted(files(root).items()):
        rng.shuffle(paths)
        got = 0
        for path in paths:
            try:
                if not 1_000 <= path.stat().st_size <= 200_000:
                    continue
                lines = path.read_text(encoding="utf-8").split("\n")
            except (OSError, UnicodeDecodeError):
                continue
            if len(lines) < 12:
                continue
            n = rng.randint(8, 40)
            start = rng.randint(0, max(0, len(lines) - n))
            text = "\n".join(lines[start: start + n])
            if len(text.strip()) < 80:
                continue
            yield lang, text
            got += 1
            if got >= per_language:
                break


def pygments_guess(text: str) -> str | None:
    from pygments.lexers import guess_lexer
    from pygments.util import ClassNotFound

    try:
        return PYGMENTS.get(guess_lexer(text).name, "other")
    except ClassNotFound:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument("--per-language", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = list(snippets(args.root, args.per_language, args.seed))
    print(f"{len(data)} snippets, {len({lang for lang, _ in data})} languages\n")
    print("| detector | right | wrong | none | ms/snippet | most confused (truth -> guess) |")
    print("|---|---|---|---|---|---|")
    detectors: list[tuple[str, Callable[[str], str | None]]] = [
        ("diffgemma cue rule (context/guess.py)", guess_language), ("pygments guess_lexer", pygments_guess)]
    for name, detect in detectors:
        right = wrong = none = 0
        confused: collections.Counter[tuple[str, str]] = collections.Counter()
        t0 = time.perf_counter()
        for lang, text in data:
            guess = detect(text)
            if guess is None:
                none += 1
            elif guess == lang:
                right += 1
            else:
                wrong += 1
                confused[(lang, guess)] += 1
        ms = (time.perf_counter() - t0) * 1000 / max(1, len(data))
        worst = ", ".join(f"{a} -> {b} ({n})" for (a, b), n in confused.most_common(4))
        print(f"| {name} | {right} | {wrong} | {none} | {ms:.1f} | {worst} |")


if __name__ == "__main__":
    main()
