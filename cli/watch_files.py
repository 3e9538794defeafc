"""Which saved files `diffgemma watch` fills: files in a language it knows (documentation formats
such as Markdown left alone, so a README's code sample is never rewritten), narrowed by --include
and --exclude globs, never a file the project's .gitignore ignores. A file named on the command line
is always watched.

Globs and .gitignore files are read with pathspec, which implements git's own matching (``*.py``,
``docs/**``, ``!keep.md``, a pattern with a slash anchored where its file is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from diffgemma.context.languages import detect_language

# Known to the grammars, but prose: a <FILL> or a `diffgemma:` line there is likelier an example
# in the documentation than a request. `--include '*.md'` opts in.
DOCUMENT_LANGUAGES = frozenset({"markdown", "rst", "typst", "latex"})


def _spec(patterns: Sequence[str]) -> pathspec.PathSpec | None:
    return pathspec.GitIgnoreSpec.from_lines(patterns) if patterns else None


def repository_root(folder: Path) -> Path | None:
    """The nearest folder at or above ``folder`` with a .git (a directory, or a worktree's file)."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


@dataclass
class GitIgnores:
    """The .gitignore files (and .git/info/exclude) that apply to paths under one repository."""

    root: Path
    _specs: dict[Path, tuple[float, pathspec.PathSpec | None]] = field(default_factory=dict)

    def _spec_in(self, folder: Path) -> pathspec.PathSpec | None:
        """The rules of ``folder``'s own .gitignore, re-read when it changes."""
        sources = [folder / ".gitignore"] + ([self.root / ".git" / "info" / "exclude"] if folder == self.root else [])
        stamp = 0.0
        lines: list[str] = []
        for source in sources:
            try:
                stamp += source.stat().st_mtime
                lines += source.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
        cached = self._specs.get(folder)
        if cached is None or cached[0] != stamp:
            cached = (stamp, _spec(lines))
            self._specs[folder] = cached
        return cached[1]

    def ignored(self, path: Path) -> bool:
        """Whether git would ignore ``path``: the deepest .gitignore with a matching rule decides,
        each matching paths relative to its own folder."""
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return False
        verdict = False
        folder = self.root
        for part in ("", *relative.parts[:-1]):
            folder = folder / part if part else folder
            spec = self._spec_in(folder)
            if spec is None:
                continue
            below = path.relative_to(folder).as_posix()
            result = spec.check_file(below)
            if result.include is not None:
                verdict = bool(result.include)
        return verdict


@dataclass
class WatchedFiles:
    """The rules for one `watch` run: its roots, the files named on the command line, the globs."""

    roots: list[Path]
    named: set[Path]
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    _include: pathspec.PathSpec | None = None
    _exclude: pathspec.PathSpec | None = None
    _git: dict[Path, GitIgnores | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._include, self._exclude = _spec(self.include), _spec(self.exclude)

    def _relative(self, path: Path) -> str:
        for root in self.roots:
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.name

    def _ignores(self, path: Path) -> GitIgnores | None:
        folder = path.parent
        if folder not in self._git:
            root = repository_root(folder)
            self._git[folder] = GitIgnores(root) if root is not None else None
        return self._git[folder]

    def path_allowed(self, path: Path) -> bool:
        """The rules that need only the path: globs and .gitignore (for the watcher's filter)."""
        path = path.resolve()
        if path in self.named:
            return True
        relative = self._relative(path)
        if self._exclude is not None and self._exclude.match_file(relative):
            return False
        if self._include is not None and not self._include.match_file(relative):
            return False
        ignores = self._ignores(path)
        return ignores is None or not ignores.ignored(path)

    def wants(self, path: Path, text: str) -> bool:
        """Whether a saved file is filled: the path rules, then its language (from the name, else a
        `#!` line) unless --include chose it or it was named."""
        if not self.path_allowed(path):
            return False
        if path.resolve() in self.named or self._include is not None:
            return True
        language = detect_language(str(path), content=text)
        return language is not None and language not in DOCUMENT_LANGUAGES
