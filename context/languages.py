"""Language names, detection from paths, and cached tree-sitter parsers.

Language names are the grammar names of tree-sitter-language-pack (``python``, ``typescript``,
``tsx``, ``cpp``, ``csharp``...). Grammars are loaded lazily and cached: creating a parser is
cheap but not free, and the LSP server asks for one on every keystroke.

The 0.x releases of tree-sitter-language-pack ship every grammar inside the wheel; the 1.x
releases download grammars on first use, which fails on a machine without network access. A
grammar that cannot be loaded is treated as "no grammar": callers fall back to line windows.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Language, Parser

log = logging.getLogger(__name__)

# File extension (lower case, without the dot) -> grammar name.
EXTENSIONS: dict[str, str] = {
    "py": "python", "pyi": "python", "pyw": "python",
    "js": "javascript", "mjs": "javascript", "cjs": "javascript", "jsx": "javascript",
    "ts": "typescript", "mts": "typescript", "cts": "typescript",
    "tsx": "tsx",
    "go": "go",
    "rs": "rust",
    "java": "java",
    "c": "c", "h": "c",
    "cc": "cpp", "cpp": "cpp", "cxx": "cpp", "c++": "cpp", "hh": "cpp", "hpp": "cpp", "hxx": "cpp",
    "h++": "cpp", "ipp": "cpp", "tpp": "cpp", "inl": "cpp",
    "cu": "cuda", "cuh": "cuda",
    "lua": "lua",
    "rb": "ruby", "rake": "ruby", "gemspec": "ruby", "ru": "ruby",
    "sh": "bash", "bash": "bash", "zsh": "bash", "ksh": "bash",
    "fish": "fish",
    "cs": "csharp",
    "php": "php",
    "kt": "kotlin", "kts": "kotlin",
    "swift": "swift",
    "scala": "scala", "sc": "scala",
    "hs": "haskell", "lhs": "haskell",
    "ex": "elixir", "exs": "elixir",
    "erl": "erlang", "hrl": "erlang",
    "elm": "elm",
    "dart": "dart",
    "jl": "julia",
    "r": "r",
    "pl": "perl", "pm": "perl",
    "ml": "ocaml", "mli": "ocaml_interface",
    "fs": "fsharp", "fsx": "fsharp", "fsi": "fsharp_signature",
    "clj": "clojure", "cljs": "clojure", "cljc": "clojure", "edn": "clojure",
    "el": "elisp",
    "scm": "scheme", "ss": "scheme",
    "rkt": "racket",
    "lisp": "commonlisp", "cl": "commonlisp",
    "zig": "zig",
    "nim": "nim",
    "v": "v",
    "odin": "odin",
    "gleam": "gleam",
    "groovy": "groovy", "gradle": "groovy",
    "m": "objc", "mm": "objc",
    "ps1": "powershell", "psm1": "powershell",
    "sql": "sql",
    "html": "html", "htm": "html",
    "css": "css", "scss": "scss",
    "vue": "vue", "svelte": "svelte", "astro": "astro",
    "json": "json",
    "yaml": "yaml", "yml": "yaml",
    "toml": "toml",
    "xml": "xml",
    "md": "markdown", "markdown": "markdown",
    "tf": "terraform", "hcl": "hcl",
    "nix": "nix",
    "proto": "proto",
    "graphql": "graphql", "gql": "graphql",
    "sol": "solidity",
    "f90": "fortran", "f95": "fortran", "f03": "fortran", "f": "fortran",
    "vhd": "vhdl", "vhdl": "vhdl",
    "sv": "verilog", "svh": "verilog",
    "tcl": "tcl",
    "glsl": "glsl", "vert": "glsl", "frag": "glsl",
    "wgsl": "wgsl", "hlsl": "hlsl",
    "gd": "gdscript",
    "hx": "haxe",
    "purs": "purescript",
    "cmake": "cmake",
    "mk": "make",
    "star": "starlark", "bzl": "starlark",
    "typ": "typst",
    "tex": "latex",
    "rst": "rst",
    "ini": "ini",
    "janet": "janet",
    "fnl": "fennel",
    "luau": "luau",
}

# Whole file names that say the language better than an extension.
FILENAMES: dict[str, str] = {
    "makefile": "make", "gnumakefile": "make",
    "dockerfile": "dockerfile", "containerfile": "dockerfile",
    "cmakelists.txt": "cmake",
    "build": "starlark", "build.bazel": "starlark", "workspace": "starlark",
    "rakefile": "ruby", "gemfile": "ruby",
    ".bashrc": "bash", ".bash_profile": "bash", ".profile": "bash", ".zshrc": "bash",
}

# Other spellings of a language name: editor language ids (LSP `languageId`), common short names.
ALIASES: dict[str, str] = {
    "py": "python", "python3": "python",
    "js": "javascript", "node": "javascript", "javascriptreact": "javascript", "jsx": "javascript",
    "ts": "typescript", "typescriptreact": "tsx",
    "golang": "go",
    "rs": "rust",
    "c++": "cpp", "cxx": "cpp", "cc": "cpp",
    "sh": "bash", "shell": "bash", "shellscript": "bash", "zsh": "bash",
    "c#": "csharp", "cs": "csharp", "c-sharp": "csharp",
    "kt": "kotlin",
    "rb": "ruby",
    "hs": "haskell",
    "objective-c": "objc", "objectivec": "objc", "objective-cpp": "objc",
    "yml": "yaml",
    "md": "markdown",
    "ps1": "powershell", "pwsh": "powershell",
    "ex": "elixir",
    "ocaml": "ocaml",
    "tf": "terraform",
    "make": "make", "makefile": "make",
    "docker": "dockerfile",
    "emacs-lisp": "elisp",
    "common-lisp": "commonlisp", "lisp": "commonlisp",
}

# Interpreter named on a `#!` line -> language.
INTERPRETERS: dict[str, str] = {
    "python": "python", "python3": "python", "python2": "python",
    "node": "javascript", "deno": "typescript", "bun": "javascript",
    "sh": "bash", "bash": "bash", "zsh": "bash", "ksh": "bash", "dash": "bash",
    "ruby": "ruby", "lua": "lua", "perl": "perl", "php": "php", "fish": "fish",
    "Rscript": "r", "julia": "julia", "tclsh": "tcl", "elixir": "elixir",
}


@functools.cache
def supported_languages() -> frozenset[str]:
    """Every grammar name the installed tree-sitter-language-pack knows (loadable or not)."""
    try:
        import typing

        from tree_sitter_language_pack import SupportedLanguage

        return frozenset(typing.get_args(SupportedLanguage))
    except Exception:  # a pack without the literal: accept our own table's names
        return frozenset(EXTENSIONS.values()) | frozenset(FILENAMES.values())


def normalize_language(name: str | None) -> str | None:
    """The grammar name for ``name`` (an editor language id, alias, or grammar name), else None."""
    if not name:
        return None
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in supported_languages() else None


def _from_shebang(content: str) -> str | None:
    if not content.startswith("#!"):
        return None
    words = content[2 : content.find("\n") if "\n" in content else len(content)].split()
    if not words:
        return None
    prog = os.path.basename(words[0])
    if prog == "env":
        # `#!/usr/bin/env -S python3 -u`: the first word that is not an option
        prog = next((w for w in words[1:] if not w.startswith("-")), "")
    prog = prog.rstrip("0123456789.") or prog
    return INTERPRETERS.get(prog) or INTERPRETERS.get(os.path.basename(words[0]))


def detect_language(path: str | None, explicit: str | None = None, *, content: str | None = None,
                    guess: bool = False) -> str | None:
    """Language of a buffer: ``explicit`` wins, then the file name, then a ``#!`` line in ``content``,
    then, with ``guess``, what ``content`` reads like (`guess.guess_language`: only when one
    language leads clearly).

    Returns a tree-sitter-language-pack grammar name, or None when unknown (callers then use
    line windows). An explicit name that is not a known language also gives None.
    """
    if explicit:
        return normalize_language(explicit)
    if path:
        base = os.path.basename(path)
        lang = FILENAMES.get(base.lower())
        if lang is None:
            _, dot, ext = base.rpartition(".")
            if dot and ext:
                lang = EXTENSIONS.get(ext.lower())
        if lang is not None and lang in supported_languages():
            return lang
    if content:
        from diffgemma.context.guess import guess_language

        return _from_shebang(content) or (guess_language(content) if guess else None)
    return None


_lock = threading.Lock()
_failed: set[str] = set()


@functools.cache
def _load_language(name: str) -> Language | None:
    try:
        from tree_sitter_language_pack import get_language

        return get_language(name)  # type: ignore[arg-type]
    except Exception as exc:  # missing or undownloadable grammar: line windows instead
        with _lock:
            if name not in _failed:
                _failed.add(name)
                log.warning("tree-sitter grammar %r is not available (%s); using line windows", name, exc)
        return None


def get_language(name: str | None) -> Language | None:
    """The tree-sitter Language for a grammar name, or None if unknown or not installed."""
    lang = normalize_language(name)
    return _load_language(lang) if lang else None


# One Parser per language per thread (``parsers``): a Parser holds parse state and is not thread-safe.
_per_thread = threading.local()


def get_parser(name: str | None) -> Parser | None:
    """A cached tree-sitter Parser for ``name`` (per thread), or None when no grammar loads."""
    lang = normalize_language(name)
    if lang is None:
        return None
    parsers: dict[str, Parser] | None = getattr(_per_thread, "parsers", None)
    if parsers is None:
        parsers = _per_thread.parsers = {}
    parser = parsers.get(lang)
    if parser is None:
        language = _load_language(lang)
        if language is None:
            return None
        from tree_sitter import Parser

        parser = parsers[lang] = Parser(language)
    return parser


def has_grammar(name: str | None) -> bool:
    """Whether a tree-sitter grammar for ``name`` loads on this machine."""
    return get_language(name) is not None
