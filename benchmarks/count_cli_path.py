"""How much of the project one CLI call runs: the pipe example against a warm daemon, counted.

    python benchmarks/count_cli_path.py [--model M] [--baseline DIR] [--list]

A real daemon serves the model (the embedded diffgemma-mini by default) in temporary folders and
answers one warm-up request; then ``printf 'def add(a, b):\\n    <FILL>\\n' | diffgemma infill -``
runs in a fresh process whose every Python call is seen by ``sys.setprofile`` from its first
import to its exit, with stdin, stdout and stderr as pipes (so no terminal, no live view). It
prints the distinct project functions (the package's functions and methods; module and class
bodies, lambdas and comprehensions left out), the files they are in and the calls made to them,
then the class bodies run (at import) and the files any project code ran in. ``--baseline DIR``
names a checkout of another version (for example one made with ``git worktree add``): its CLI is
counted against the same daemon, side by side. ``--list`` prints every function counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUFFER = b"def add(a, b):\n    <FILL>\n"

# Runs in the profiled process: the hook is set before diffgemma's first import.
_PROFILED = r"""
import inspect, json, os, sys
SKIP = {"<module>", "<lambda>", "<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"}
counts = {}
roots = ()

def hook(frame, event, arg):
    if event != "call":
        return
    code = frame.f_code
    if code.co_name in SKIP:
        return
    # Module and class bodies run once, at import; functions and methods get new locals.
    kind = "function" if code.co_flags & inspect.CO_NEWLOCALS else "body"
    for root in roots:
        if code.co_filename.startswith(root):
            key = (code.co_filename[len(root):], code.co_firstlineno, code.co_qualname, kind)
            counts[key] = counts.get(key, 0) + 1
            return

import diffgemma
# An editable install may run the package through a folder of links: either path counts.
here = os.path.dirname(diffgemma.__file__)
roots = (here + os.sep, os.path.realpath(here) + os.sep)
sys.argv = ["diffgemma", "infill", "-"]
code = 0
sys.setprofile(hook)
try:
    from diffgemma.cli.app import main
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
finally:
    sys.setprofile(None)
with open(os.environ["COUNT_OUT"], "w") as out:
    json.dump({"exit": code, "functions": [[*k, v] for k, v in counts.items()]}, out)
"""


def start_daemon(work: Path, model: str | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`diffgemma serve` on the default socket of ``env`` (as the CLI finds it with no options)."""
    os.environ.update(env)
    from diffgemma.runtime.api.client import Client

    argv = [sys.executable, "-m", "diffgemma.cli", "serve", "--keep-alive", "-1"]
    if model:
        argv += ["--model", model]
    log = work / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out, env=env, cwd=str(work))
    deadline = time.monotonic() + 300
    with Client(timeout=10) as client:
        while not (client.health() and client.status().get("state") == "ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start: {log.read_text()[-800:]}")
            time.sleep(0.2)
    return process


def tree_env(base: dict[str, str], work: Path, label: str, tree: Path | None) -> dict[str, str]:
    """The environment of a CLI from ``tree`` (None: the installed one)."""
    if tree is None:
        return base
    shim = work / f"shim-{label}"  # a folder holding a link named after the package
    shim.mkdir()
    (shim / "diffgemma").symlink_to(tree.resolve())
    return {**base, "PYTHONPATH": str(shim)}


def count(env: dict[str, str], work: Path, label: str) -> dict[str, Any]:
    out = work / f"count-{label}.json"
    done = subprocess.run([sys.executable, "-c", _PROFILED], input=BUFFER, capture_output=True,
                          env={**env, "COUNT_OUT": str(out)}, cwd=str(work), timeout=600)
    data = json.loads(out.read_text())
    if data["exit"] != 0 or b"<FILL>" in done.stdout:
        raise SystemExit(f"{label}: the infill failed (exit {data['exit']}): {done.stderr.decode()[-800:]}")
    functions = [f for f in data["functions"] if f[3] == "function"]
    bodies = [f for f in data["functions"] if f[3] == "body"]
    return {"functions": functions, "files": sorted({f[0] for f in functions}),
            "calls": sum(f[4] for f in functions), "bodies": bodies,
            "body_files": sorted({f[0] for f in functions + bodies})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="the model the daemon serves (default: the daemon's own default)")
    parser.add_argument("--baseline", type=Path, help="a checkout of another version, counted side by side")
    parser.add_argument("--list", action="store_true", help="print every function counted")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dgn", dir="/tmp"))  # AF_UNIX paths must stay short
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIFFGEMMA_")}
    base.update(DIFFGEMMA_RUNTIME_DIR=str(work / "run"), DIFFGEMMA_STATE_DIR=str(work / "state"),
                DIFFGEMMA_CONFIG_DIR=str(work / "cfg"))
    process = start_daemon(work, args.model, base)
    if args.model:
        base["DIFFGEMMA_MODEL"] = args.model
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        trees: list[tuple[str, Path | None]] = [("this tree", None)]
        if args.baseline is not None:
            trees.append(("baseline", args.baseline))
        for label, tree in trees:
            env = tree_env(base, work, label.replace(" ", "-"), tree)
            count(env, work, f"warm-{label.replace(' ', '-')}")  # the daemon's first request is the slow one
            rows.append((label, count(env, work, label.replace(" ", "-"))))
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    print("printf 'def add(a, b):\\n    <FILL>\\n' | diffgemma infill -   (warm daemon; stdin, stdout, stderr pipes)")
    print("| CLI | project functions | their files | calls | class bodies run | files run |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in rows:
        print(f"| {label} | {len(row['functions'])} | {len(row['files'])} | {row['calls']} | {len(row['bodies'])} "
              f"| {len(row['body_files'])} |")
    if args.list:
        for label, row in rows:
            print(f"\n{label}:")
            for name, line, qualname, _kind, calls in sorted(row["functions"]):
                print(f"  {name}:{line} {qualname} x{calls}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
