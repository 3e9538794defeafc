"""Cross-file context: real imports resolved in a temporary workspace, and the file watcher."""

from __future__ import annotations

import time
from pathlib import Path
from textwrap import dedent

import pytest
from conftest import grammars_missing

from diffgemma.context.crossfile import Workspace, changed_span, crossfile_snippets, find_imports
from diffgemma.context.parsing import parse

pytestmark = pytest.mark.skipif(grammars_missing() is not None, reason=str(grammars_missing()))


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return path


LONG_BODY = "\n".join(f"    step_{i} = value * {i}" for i in range(40)) + "\n    return step_39\n"


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    _write(tmp_path, "outside.py", "def secret():\n    return 42\n")
    # Python package with absolute, relative, aliased and submodule imports
    _write(root, "app/__init__.py", "")
    models = dedent(
        '''
        """Data models."""
        from dataclasses import dataclass


        @dataclass
        class User:
            name: str
            email: str


        def make_user(name: str) -> User:
            """Build a user with a default email."""
            return User(name, f"{name}@example.com")


        def heavy(value: int) -> int:
        '''
    )
    _write(root, "app/models.py", models + LONG_BODY)
    _write(root, "app/util.py", "def slugify(text: str) -> str:\n    return text.lower().replace(' ', '-')\n")
    _write(root, "app/config.py", "DEBUG = True\n\n\ndef load_config(path):\n    return {'path': path}\n")
    _write(root, "app/helpers/__init__.py", "def help_me():\n    return 'help'\n")
    _write(
        root,
        "app/main.py",
        """
        import os
        import requests
        import app.config as config
        from app import helpers
        from .util import slugify
        from app.models import User, make_user
        from ..outside import secret

        a = make_user("a")
        b = make_user("b")
        c = make_user(slugify("C D"))
        """,
    )
    # JavaScript / TypeScript
    _write(root, "web/lib/math.ts", "export function add(a: number, b: number): number {\n  return a + b;\n}\n")
    _write(root, "web/lib/math.js", "export function add(a, b) {\n  return a + b;\n}\n")
    pad = "function pad(s, n) {\n  return String(s).padStart(n);\n}\nmodule.exports = { pad };\n"
    _write(root, "web/fmt/index.js", pad)
    _write(root, "node_modules/react/index.js", "export default function React() {}\n")
    _write(
        root,
        "web/app.js",
        """
        import React from "react";
        import { add } from "./lib/math.js";
        const fmt = require("./fmt");

        console.log(fmt.pad(add(1, 2), 4));
        """,
    )
    _write(root, "web/main.ts", 'import { add } from "./lib/math.js";\n\nconst n: number = add(1, 2);\n')
    # Go module
    _write(root, "go.mod", "module example.com/shop\n\ngo 1.22\n")
    _write(
        root,
        "cart/cart.go",
        "package cart\n\ntype Cart struct {\n\tItems []string\n}\n\n"
        "func (c *Cart) Add(s string) {\n\tc.Items = append(c.Items, s)\n}\n",
    )
    _write(root, "cart/cart_test.go", "package cart\n\nfunc TestNothing() {}\n")
    _write(
        root,
        "main.go",
        'package main\n\nimport (\n\t"fmt"\n\t"example.com/shop/cart"\n)\n\n'
        "func main() {\n\tc := cart.Cart{}\n\tfmt.Println(c)\n}\n",
    )
    # Rust crate
    _write(root, "Cargo.toml", '[package]\nname = "shop"\nversion = "0.1.0"\n')
    _write(
        root,
        "src/model.rs",
        "pub struct Item {\n    pub name: String,\n}\n\npub fn price(i: &Item) -> u32 {\n    i.name.len() as u32\n}\n",
    )
    _write(root, "src/util.rs", "pub fn twice(x: u32) -> u32 {\n    x * 2\n}\n")
    rust_main = "mod util;\nuse crate::model::Item;\n\nfn main() {\n    let i = Item { name: String::new() };\n}\n"
    _write(root, "src/main.rs", rust_main)
    # C, Lua, Ruby, Bash
    _write(root, "csrc/vec.h", "struct vec { int *data; int len; };\nint vec_push(struct vec *v, int x);\n")
    _write(root, "csrc/main.c", '#include <stdio.h>\n#include "vec.h"\n\nint main(void) {\n    return 0;\n}\n')
    _write(root, "lib/util.lua", "local M = {}\n\nfunction M.tag()\n  return 'v1'\nend\n\nreturn M\n")
    _write(root, "main.lua", 'local util = require("lib.util")\n\nprint(util.tag())\n')
    _write(root, "rb/lib/shelf.rb", "class Shelf\n  def initialize\n    @books = []\n  end\nend\n")
    _write(root, "rb/app.rb", 'require "json"\nrequire_relative "lib/shelf"\n\nShelf.new\n')
    _write(root, "sh/lib/common.sh", 'log() {\n  echo "$*" >&2\n}\n')
    _write(root, "sh/run.sh", "#!/bin/bash\nsource ./lib/common.sh\n\nlog hi\n")
    return root


def _snippets(root: Path, rel: str, budget: int = 6000) -> list[tuple[str, str]]:
    path = root / rel
    return crossfile_snippets(root, path, path.read_text(encoding="utf-8"), budget)


def test_python_imports_resolve_and_rank(workspace: Path) -> None:
    snippets = _snippets(workspace, "app/main.py")
    paths = [p for p, _ in snippets]
    # make_user is used three times, slugify once: models first.
    assert paths[0] == "app/models.py"
    assert set(paths) == {"app/models.py", "app/util.py", "app/config.py", "app/helpers/__init__.py"}
    models = dict(snippets)["app/models.py"]
    # Named, small definitions come whole; others as skeletons with the body elided.
    assert "class User:\n    name: str\n    email: str" in models
    assert 'return User(name, f"{name}@example.com")' in models
    assert "def heavy(value: int) -> int:\n    ..." in models and "step_10" not in models
    assert "def slugify(text: str) -> str:" in dict(snippets)["app/util.py"]
    # Nothing from outside the root, nothing for third-party modules.
    assert not any("secret" in text for _, text in snippets)


def test_budget_is_respected(workspace: Path) -> None:
    for budget in (0, 60, 200, 500):
        snippets = _snippets(workspace, "app/main.py", budget)
        assert sum(len(p) + len(t) for p, t in snippets) <= budget
    small = _snippets(workspace, "app/main.py", 200)
    assert small and small[0][0] == "app/models.py"


def test_javascript_and_typescript_relative_imports(workspace: Path) -> None:
    js = dict(_snippets(workspace, "web/app.js"))
    assert set(js) == {"web/lib/math.js", "web/fmt/index.js"}  # not node_modules/react
    assert "export function add(a, b)" in js["web/lib/math.js"]
    assert "function pad(s, n)" in js["web/fmt/index.js"]
    ts = dict(_snippets(workspace, "web/main.ts"))
    assert list(ts) == ["web/lib/math.ts"]  # "./lib/math.js" names the TypeScript source
    assert "add(a: number, b: number): number" in ts["web/lib/math.ts"]


def test_go_rust_c_lua_ruby_bash_imports(workspace: Path) -> None:
    go = dict(_snippets(workspace, "main.go"))
    assert list(go) == ["cart/cart.go"]
    assert "type Cart struct" in go["cart/cart.go"] and "func (c *Cart) Add(s string)" in go["cart/cart.go"]
    rust = dict(_snippets(workspace, "src/main.rs"))
    assert set(rust) == {"src/model.rs", "src/util.rs"}
    assert "pub struct Item" in rust["src/model.rs"]
    assert "pub fn twice" in rust["src/util.rs"]
    c = dict(_snippets(workspace, "csrc/main.c"))
    assert "int vec_push(struct vec *v, int x);" in c["csrc/vec.h"]
    lua = dict(_snippets(workspace, "main.lua"))
    assert "function M.tag()" in lua["lib/util.lua"]
    rb = dict(_snippets(workspace, "rb/app.rb"))
    assert "class Shelf" in rb["rb/lib/shelf.rb"]
    sh = dict(_snippets(workspace, "sh/run.sh"))
    assert "log()" in sh["sh/lib/common.sh"]


def test_find_imports_reads_names() -> None:
    text = "from a.b import (c as d,\n    e)\nimport x.y, z as w\nfrom . import sib\n"
    doc = parse(text, "python")
    assert doc is not None
    refs = [(r.spec, r.names) for r in find_imports(doc)]
    assert refs == [("a.b", ("c", "e")), ("x.y", ("x",)), ("z", ("w",)), (".", ("sib",))]


def test_changed_span() -> None:
    assert changed_span("abcdef", "abXYef") == (2, 4)
    assert changed_span("abc", "abc") == (3, 3)
    assert changed_span("abcdef", "abef") == (2, 2)
    assert changed_span("", "new") == (0, 3)


def _wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_workspace_watcher_tracks_changes(workspace: Path) -> None:
    notes = workspace / "app" / "notes.py"
    original = "".join(f"def note_{i}(x):\n    return x + {i}\n\n\n" for i in range(12))
    notes.write_text(original, encoding="utf-8")
    ws = Workspace(workspace)
    ws.start()
    try:
        assert ws.running
        ws.remember(notes, original)
        (workspace / "node_modules" / "react" / "index.js").write_text("export default 1;\n")
        notes.write_text(original.replace("return x + 7\n", "return x * 700 + 7\n"), encoding="utf-8")
        assert _wait_for(lambda: str(notes) in ws.recent_paths()), "watcher did not see the change"
        change = ws.recent()[0]
        assert change.path == notes and change.span is not None
        assert "node_modules" not in " ".join(ws.recent_paths())
        # The buffer imports models; the recent change comes after, as the touched definition only.
        main = workspace / "app" / "main.py"
        extra = ws.extra_for(main, main.read_text(encoding="utf-8"), 6000)
        paths = [p for p, _ in extra]
        assert paths[0] == "app/models.py" and paths[-1] == "app/notes.py"
        chunk = dict(extra)["app/notes.py"]
        assert chunk == "def note_7(x):\n    return x * 700 + 7"
        # A new file shows up too; a deleted one goes away.
        fresh = _write(workspace, "app/fresh.py", "def brand_new():\n    return 1\n")
        assert _wait_for(lambda: str(fresh) in ws.recent_paths())
        fresh.unlink()
        assert _wait_for(lambda: str(fresh) not in ws.recent_paths())
    finally:
        ws.stop()
    assert not ws.running


def test_note_change_without_watcher(workspace: Path) -> None:
    ws = Workspace(workspace)
    path = workspace / "app" / "util.py"
    ws.note_change(path, "def slugify(text: str) -> str:\n    return text.upper()\n")
    assert ws.recent_paths() == [str(path)]
    extra = ws.extra_for(workspace / "web" / "app.js", "console.log(1);\n", 2000)
    assert extra == [("app/util.py", "def slugify(text: str) -> str:\n    return text.upper()")]
