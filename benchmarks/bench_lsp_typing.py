"""Typing in the language server: latency per keystroke in a small file and in a 2 MB file, side by side.

The small file (20 KB) is just larger than the context window, so both answers read windows of the
same size: what grows with the file is the server's work, which is what this measures.

A real `diffgemma lsp` process (driven by pytest-lsp's client) and a real daemon on the tiny
random-weight checkpoint (a canvas of a few tokens and steps, so the model's share is small and
the same for both files). Each keystroke is an incremental didChange of one character at the
cursor followed by a request there, its latency running from sending the change to the answer:
`diffgemma/context` (the server's own work: sync, position, the window cut around the cursor,
cross-file context; no model) and `textDocument/inlineCompletion` (the whole answer, the daemon
included). Keystrokes alternate between the two files, so both see the same machine load.

    python benchmarks/bench_lsp_typing.py                   # 40 keystrokes per file
    python benchmarks/bench_lsp_typing.py --keys 10 --megabytes 0.5
    python benchmarks/bench_lsp_typing.py --profile lsp.prof   # cProfile of the server process
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# The small file: larger than the context window (the server's default contextChars, 8,000),
# so both files send prompts of the same size and the model's share of an answer is the same; a
# 200-character file would answer faster because its prompt is 40 times shorter, which is the
# model's work, not the server's.
SMALL_KILOBYTES = 20


def big_source(megabytes: float) -> str:
    """Distinct Python functions and classes up to ``megabytes`` (code a tree-sitter parse must
    really go through), with a few non-ASCII names, as real files have."""
    parts, size, i = [], 0, 0
    while size < megabytes * 1_000_000:
        piece = (f"def helper_{i}(values, factor={i % 7}):\n    \"\"\"Scale the values (ä {i}).\"\"\"\n"
                 f"    out = []\n    for value in values:\n        out.append(value * factor + {i})\n"
                 f"    return out\n\n\nclass Thing{i}:\n    def __init__(self):\n        self.n = {i}\n\n\n")
        parts.append(piece)
        size += len(piece)
        i += 1
    return "".join(parts)


@dataclass
class Doc:
    uri: str
    line: int
    character: int
    version: int = 1
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"context": [], "answer": []})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def keystroke(client: object, doc: Doc, char: str, kind: str = "answer") -> float:
    from lsprotocol import types

    start = time.perf_counter()
    doc.version += 1
    position = types.Position(line=doc.line, character=doc.character)
    client.text_document_did_change(types.DidChangeTextDocumentParams(  # type: ignore[attr-defined]
        text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=position, end=position),
                                                                text=char)]))
    doc.character += 1
    at = types.Position(line=doc.line, character=doc.character)
    if kind == "context":
        params = {"textDocument": {"uri": doc.uri}, "position": {"line": at.line, "character": at.character}}
        await client.protocol.send_request_async("diffgemma/context", params)  # type: ignore[attr-defined]
    else:
        await client.text_document_inline_completion_async(types.InlineCompletionParams(  # type: ignore[attr-defined]
            text_document=types.TextDocumentIdentifier(uri=doc.uri), position=at,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    return (time.perf_counter() - start) * 1000


def open_doc(client: object, path: Path, text: str, line: int) -> Doc:
    from lsprotocol import types

    lines = text.split("\n")
    client.text_document_did_open(types.DidOpenTextDocumentParams(  # type: ignore[attr-defined]
        text_document=types.TextDocumentItem(uri=path.as_uri(), language_id="python", version=1, text=text)))
    return Doc(path.as_uri(), line, len(lines[line]))


async def measure(root: Path, socket: Path, env: dict[str, str], keys: int, megabytes: float,
                  profile: Path | None) -> tuple[Doc, Doc]:
    from lsprotocol import types
    from pytest_lsp import make_test_lsp_client

    client = make_test_lsp_client()
    command = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), "-m", "diffgemma.lsp"]
    await client.start_io(*command, env=env)
    try:
        caps = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities()))
        await client.initialize_session(types.InitializeParams(
            capabilities=caps, root_uri=root.as_uri(),
            initialization_options={"socket": str(socket), "debounceMs": 0, "maxTokens": 4, "steps": 2}))
        docs = []
        for name, text in (("small.py", big_source(SMALL_KILOBYTES / 1000)), ("big.py", big_source(megabytes))):
            (root / name).write_text(text)
            # the cursor at the end of a line in the middle of the file
            middle = text.count("\n") // 2
            while not text.split("\n")[middle].strip():
                middle += 1
            docs.append(open_doc(client, root / name, text, middle))
        small, big = docs
        for doc in (small, big):  # warm up: the first parse of each, the daemon's prefix cache
            await keystroke(client, doc, " ")
        for kind in ("context", "answer"):
            for i in range(keys):
                for doc in (small, big) if i % 2 == 0 else (big, small):
                    doc.latencies[kind].append(await keystroke(client, doc, "x", kind))
        return small, big
    finally:
        await client.shutdown_session()


def report(small: Doc, big: Doc, megabytes: float) -> str:
    rows = [f"{'request':>8} {'file':>8} {'keys':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"]
    ratios = []
    for kind in ("context", "answer"):
        for name, doc in ((f"{SMALL_KILOBYTES} KB", small), (f"{megabytes:g} MB", big)):
            lat = doc.latencies[kind]
            rows.append(f"{kind:>8} {name:>8} {len(lat):5d} {statistics.median(lat):8.1f} "
                        f"{percentile(lat, 0.95):8.1f} {max(lat):8.1f}")
        p50 = statistics.median(big.latencies[kind]) / statistics.median(small.latencies[kind])
        p95 = percentile(big.latencies[kind], 0.95) / percentile(small.latencies[kind], 0.95)
        ratios.append(f"{kind}: p50 {p50:.2f}x, p95 {p95:.2f}x")
    rows.append("big / small: " + "; ".join(ratios))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=40, help="keystrokes per file (default 40)")
    parser.add_argument("--megabytes", type=float, default=2.0, help="size of the big file (default 2)")
    parser.add_argument("--model", help="checkpoint the daemon serves (default: a tiny random one)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the language server here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="dgb", dir="/tmp"))
    env = {**os.environ, "DIFFGEMMA_RUNTIME_DIR": str(root / "run"), "DIFFGEMMA_STATE_DIR": str(root / "state"),
           "DIFFGEMMA_CONFIG_DIR": str(root / "cfg")}
    socket = root / "d.sock"
    daemon = None
    try:
        model = args.model
        if not model:
            from diffgemma.training.tiny import write_tiny

            model = str(write_tiny(root / "model", seed=0))
        daemon = subprocess.Popen([sys.executable, "-m", "diffgemma.cli", "serve", "--model", model, "--socket",
                                   str(socket)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from diffgemma.runtime.api.client import Client

        with Client(socket=socket, timeout=10) as client:
            deadline = time.monotonic() + 300
            while not (client.health() and client.status().get("state") == "ready"):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.2)
        work = root / "work"
        work.mkdir()
        small, big = asyncio.run(measure(work, socket, env, args.keys, args.megabytes, args.profile))
        print(report(small, big, args.megabytes))
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
