"""Context window speed on large files: cold parse, cached tree, and one-keystroke edits.

    python benchmarks/bench_context.py [--lines 10000] [--repeat 50]

Generates a ~10,000-line Python file and a similar JavaScript file, then times
`cursor_window` (milliseconds per call, median over several cursor positions):

- cold:       nothing cached: a full tree-sitter parse plus the window
- cached:     the same text again: the window alone
- keystroke:  one character inserted at the cursor: the skeleton follows the edit, the
              region around the cursor is reparsed incrementally, then the window
- keystroke, whole-file reparse: the same with region=False (incremental parse of the
              whole buffer), for comparison
- lines:      the line-based fallback (no grammar) for comparison

and the cross-file snippets for a buffer importing from a small generated workspace.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from diffgemma.context import cursor_window
from diffgemma.context.crossfile import crossfile_snippets
from diffgemma.context.parsing import cache_stats
from diffgemma.context.window import clear_caches


def python_source(lines: int) -> str:
    out = ["import os", "import sys", "from dataclasses import dataclass", ""]
    i = 0
    while len(out) < lines:
        out += [
            "",
            "@dataclass",
            f"class Record{i}:",
            f'    """Record number {i}."""',
            "    name: str",
            "    size: int = 0",
            "",
            "    def grow(self, n: int) -> int:",
            "        total = self.size",
            "        for k in range(n):",
            "            total += k * 2",
            "        return total",
            "",
            "",
            f"def helper_{i}(values: list[int]) -> dict[str, int]:",
            "    result = {}",
            "    for v in values:",
            "        if v % 3 == 0:",
            f'            result[f"fizz{{v}}"] = v + {i}',
            "        else:",
            "            result[str(v)] = os.getpid() + v",
            "    return result",
        ]
        i += 1
    return "\n".join(out[:lines]) + "\n"


def js_source(lines: int) -> str:
    out = ['import fs from "node:fs";', 'import { join } from "node:path";', ""]
    i = 0
    while len(out) < lines:
        out += [
            "",
            f"export class Widget{i} {{",
            "  constructor(name, size = 0) {",
            "    this.name = name;",
            "    this.size = size;",
            "  }",
            "",
            "  grow(n) {",
            "    let total = this.size;",
            "    for (let k = 0; k < n; k++) {",
            "      total += k * 2;",
            "    }",
            "    return total;",
            "  }",
            "}",
            "",
            f"export function helper{i}(values) {{",
            "  const result = {};",
            "  for (const v of values) {",
            f"    result[`k${{v}}`] = v + {i};",
            "  }",
            '  return join("a", String(result));',
            "}",
        ]
        i += 1
    return "\n".join(out[:lines]) + "\n"


def _ms(fn, repeat: int) -> tuple[float, float, float]:
    """(median wall ms, min wall ms, median CPU ms of this thread) per call.

    CPU time is reported beside wall time because a shared machine's load stretches wall
    time with waits for a core that the code itself does not cause.
    """
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def _median3(results: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    return (
        statistics.median(r[0] for r in results),
        min(r[1] for r in results),
        statistics.median(r[2] for r in results),
    )


Row = tuple[str, str, tuple[float, float, float]]


def bench_file(name: str, text: str, language: str, repeat: int) -> list[Row]:
    offsets = [len(text) * k // 7 for k in range(1, 7)]
    offsets = [text.find("\n", o) for o in offsets]  # ends of lines, where people type
    rows = []

    def cold() -> None:
        clear_caches()
        cursor_window(text, offsets[2], language)

    cursor_window(text, offsets[0], language)  # load the grammar once
    rows.append((name, "cold (full parse)", _ms(cold, max(3, repeat // 10))))
    cursor_window(text, offsets[0], language)
    cached = _median3([_ms(lambda o=o: cursor_window(text, o, language), repeat) for o in offsets])
    rows.append((name, "cached tree", cached))

    for label, region in (("keystroke", True), ("keystroke, whole-file reparse", False)):
        state = {"text": text, "i": 0}

        def keystroke(region: bool = region, state: dict = state) -> None:
            o = offsets[3] + state["i"]
            state["text"] = state["text"][:o] + "x" + state["text"][o:]
            state["i"] += 1
            cursor_window(state["text"], o + 1, language, document=name, region=region)

        clear_caches()
        cursor_window(text, offsets[3], language, document=name, region=region)
        rows.append((name, label, _ms(keystroke, repeat)))
    lines = _median3([_ms(lambda o=o: cursor_window(text, o, None), repeat) for o in offsets])
    rows.append((name, "line fallback", lines))
    return rows


def bench_crossfile(repeat: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pkg").mkdir()
        (root / "pkg" / "__init__.py").write_text("")
        for k in range(8):
            (root / "pkg" / f"mod{k}.py").write_text(python_source(400))
        imports = "".join(f"from pkg.mod{k} import helper_{k}, Record{k}\n" for k in range(8))
        buf = imports + "\nx = helper_1([1])\n"
        crossfile_snippets(root, root / "main.py", buf, 4000)  # outlines parsed once
        ms = _ms(lambda: crossfile_snippets(root, root / "main.py", buf, 4000), repeat)
        rows.append(("8 imported files", "crossfile, small buffer", ms))
        state = {"text": imports + python_source(10_000), "i": 0}
        at = len(state["text"]) // 2

        def keystroke() -> None:
            o = at + state["i"]
            state["text"] = state["text"][:o] + "x" + state["text"][o:]
            state["i"] += 1
            crossfile_snippets(root, root / "big.py", state["text"], 4000)

        keystroke()
        rows.append(("8 imported files", "crossfile, 10k-line buffer, keystroke", _ms(keystroke, repeat)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    py, js = python_source(args.lines), js_source(args.lines)
    rows = bench_file(f"python {args.lines} lines ({len(py) // 1024} KiB)", py, "python", args.repeat)
    rows += bench_file(f"javascript {args.lines} lines ({len(js) // 1024} KiB)", js, "javascript", args.repeat)
    rows += bench_crossfile(args.repeat)
    width = max(len(r[0]) for r in rows)
    cw = max(len(r[1]) for r in rows)
    print(f"{'file':<{width}}  {'case':<{cw}}  {'median ms':>9}  {'min ms':>8}  {'cpu ms':>8}")
    for name, case, (med, low, cpu) in rows:
        print(f"{name:<{width}}  {case:<{cw}}  {med:>9.3f}  {low:>8.3f}  {cpu:>8.3f}")
    cold = {r[0]: r[2][2] for r in rows if r[1].startswith("cold")}
    cached = {r[0]: r[2][2] for r in rows if r[1] == "cached tree"}
    keys = {r[0]: r[2][2] for r in rows if r[1] == "keystroke"}
    for name in cold:
        print(
            f"{name}: cached tree {cold[name] / max(cached[name], 1e-6):.0f}x, "
            f"keystroke {cold[name] / max(keys[name], 1e-6):.0f}x faster than a cold parse (CPU time)"
        )
    print("parse cache:", cache_stats())


if __name__ == "__main__":
    main()
