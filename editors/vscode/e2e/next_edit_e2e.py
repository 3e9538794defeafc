"""Next-edit suggestions in a real VS Code: code-server with the packaged extension, driven by
Chromium through Playwright, against a diffgemma daemon.

    python next_edit_e2e.py --code-server BIN --vsix FILE --diffgemma BIN --model DIR --out DIR

It starts a daemon (``diffgemma serve``) on a private socket and code-server on a free port with
private folders, opens a notes file, changes a word as a user types it, and checks what VS Code
shows and does. With ghost text off (nothing else competes): the suggestion drawn in place (the
status-bar item, the new text after the replaced lines), Escape dismissing it, "Go to next
suggested edit" and Tab going to it, the same command going on to the next suggested place, Tab
accepting it (the saved file is the old one with the suggested edits applied). Then with ghost
text on: an edit shows ghost text and no suggestion (the server holds it back), and Escape over
the ghost text brings the suggestion. The daemon's threshold is 0 so that a random-weight model
proposes something. Screenshots, the language server's log and ``result.json`` (what was seen,
step by step) go to --out; the exit status is 0 when every check passed.

Needs only the standard library and Playwright (``pip install playwright``; the browser is the
system's Chromium, never a download). Nothing here imports diffgemma: it runs in its own venv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NOTES = "".join(f"item {i}: apples and pears\n" for i in range(30))
EDIT_LINE = 14  # 1-based: "item 13: apples and pears"
WAIT_S = 300.0  # one suggestion from the tiny model on a busy CPU takes tens of seconds


class Failed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status < 500)
    except OSError:
        return False


def daemon_healthy(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(b"GET /health HTTP/1.0\r\nHost: diffgemma\r\n\r\n")
            status_line = s.recv(64).split(b"\r\n", 1)[0]
            return status_line.split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def wait(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@contextlib.contextmanager
def process(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def prepare(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Private folders, the extension installed, its settings, the workspace with notes.txt."""
    root = out / "vscode"
    dirs = {name: root / name for name in ("data", "extensions", "workspace", "home", "xdg")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    dirs["socket"] = Path(f"/tmp/dg-e2e-{os.getpid()}.sock")  # socket paths must stay short
    (dirs["workspace"] / "notes.txt").write_text(NOTES)
    (dirs["workspace"] / "todo.log").write_text(NOTES.replace("item", "todo"))
    # the language server as the extension starts it, keeping its debug log with the results
    wrapper = root / "diffgemma-lsp"
    wrapper.write_text(f'#!/bin/sh\nexec "{args.diffgemma}" "$@" --verbose --log-file "{out / "lsp.log"}"\n')
    wrapper.chmod(0o755)
    settings = {
        "diffgemma.serverPath": str(wrapper),
        "diffgemma.socket": str(dirs["socket"]),
        "diffgemma.autoStart": False,
        # ghost text only in todo.log (language "log"): in notes.txt the suggestion alone is tested
        "diffgemma.enable": {"*": False, "log": True},
        "diffgemma.maxTokens": 8,
        "diffgemma.steps": 3,
        "diffgemma.nextEdit.threshold": 0,
        "security.workspace.trust.enabled": False,
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
        "editor.wordBasedSuggestions": "off",
        "telemetry.telemetryLevel": "off",
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
    }
    user = dirs["data"] / "User"
    user.mkdir(parents=True, exist_ok=True)
    (user / "settings.json").write_text(json.dumps(settings, indent=2))
    install = [args.code_server, "--user-data-dir", str(dirs["data"]), "--extensions-dir", str(dirs["extensions"]),
               "--install-extension", args.vsix]
    done = subprocess.run(install, capture_output=True, text=True, env=server_env(dirs), timeout=300)
    if done.returncode != 0:
        raise Failed(f"installing the extension failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")
    return dirs


def server_env(dirs: dict[str, Path]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HOME=str(dirs["home"]), XDG_STATE_HOME=str(dirs["xdg"] / "state"),
               XDG_CACHE_HOME=str(dirs["xdg"] / "cache"), XDG_RUNTIME_DIR=str(dirs["xdg"] / "run"),
               XDG_CONFIG_HOME=str(dirs["xdg"] / "config"), XDG_DATA_HOME=str(dirs["xdg"] / "data"))
    for name in ("state", "cache", "run", "config", "data"):
        (dirs["xdg"] / name).mkdir(parents=True, exist_ok=True)
    return env


def logged_answers(data: Path) -> list[dict[str, Any]]:
    """The suggestions the extension logged ("next edit shown: {json}"), oldest first."""
    answers = []
    for log in sorted(data.glob("logs/**/*diffgemma*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "next edit shown: " in line:
                answers.append(json.loads(line.split("next edit shown: ", 1)[1]))
    return answers


def apply(text: str, edits: list[dict[str, Any]]) -> str:
    """``text`` with the suggestion's edits (LSP ranges; plain ASCII here, so characters are
    UTF-16 units) applied from the last one up, as VS Code applies them: a carriage return in the
    new text ends a line like the document's own line ends do."""
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    for edit in sorted(edits, key=lambda e: (e["range"]["start"]["line"], e["range"]["start"]["character"]),
                       reverse=True):
        a = starts[edit["range"]["start"]["line"]] + edit["range"]["start"]["character"]
        b = starts[edit["range"]["end"]["line"]] + edit["range"]["end"]["character"]
        text = text[:a] + edit["newText"].replace("\r\n", "\n").replace("\r", "\n") + text[b:]
    return text


class Editor:
    """The code-server page, with the few gestures this check uses."""

    def __init__(self, page: Any, out: Path) -> None:
        self.page = page
        self.out = out
        self.shots: list[str] = []

    def shot(self, name: str) -> None:
        path = self.out / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        self.shots.append(path.name)

    def status_text(self) -> str:
        return str(self.page.locator("#workbench\\.parts\\.statusbar").inner_text())

    def suggestion_shown(self) -> bool:
        return "next edit: line" in self.status_text()

    def cursor_line(self) -> int:
        found = re.search(r"Ln (\d+), Col \d+", self.status_text())
        if not found:
            raise Failed("the status bar shows no cursor position")
        return int(found.group(1))

    def drawn_after_texts(self) -> list[str]:
        """The text drawn after lines by decorations (CSS ::after content), as VS Code renders it."""
        return list(self.page.evaluate(
            """() => [...document.querySelectorAll('.monaco-editor .view-lines span')]
                .map(e => getComputedStyle(e, '::after').content)
                .filter(c => c && c !== 'none' && c !== 'normal')"""
        ))

    def press(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)
            time.sleep(0.15)

    def go_to(self, line: int, column: int = 1) -> None:
        self.press("Control+g")
        self.page.keyboard.type(f"{line}:{column}")
        self.press("Enter")
        wait(lambda: self.cursor_line() == line, 10, f"the cursor on line {line}")

    def command(self, title: str) -> None:
        self.press("F1")
        self.page.keyboard.type(title)
        time.sleep(0.5)
        self.press("Enter")


def open_notes(editor: Editor, url: str) -> None:
    page = editor.page
    page.goto(url)
    page.wait_for_selector(".monaco-workbench", timeout=120_000)
    wait(lambda: "diffgemma" in editor.status_text() and "loading" not in editor.status_text().lower(), 180,
         "the diffgemma status item")
    editor.press("Control+p")
    page.keyboard.type("notes.txt")
    time.sleep(1)
    editor.press("Enter")
    page.wait_for_selector(".monaco-editor .view-lines", timeout=30_000)
    page.locator(".monaco-editor .view-lines").first.click()
    wait(lambda: "Ln " in editor.status_text(), 30, "the editor's cursor position")


def check(editor: Editor, dirs: dict[str, Path], seen: dict[str, Any]) -> None:
    notes = dirs["workspace"] / "notes.txt"
    # the edit, as a user types it: select the word, type the new one, save
    editor.go_to(EDIT_LINE, 10)
    editor.press("Control+d")  # selects the word under the cursor
    editor.page.keyboard.type("bananas", delay=80)
    editor.press("Control+s")
    wait(lambda: "item 13: bananas" in notes.read_text(), 30, "the edit saved")
    wait(editor.suggestion_shown, WAIT_S, "a suggestion after the edit")
    time.sleep(1)
    editor.shot("suggestion")
    seen["suggestion_status"] = editor.status_text()
    seen["drawn_after_lines"] = editor.drawn_after_texts()
    first = wait(lambda: logged_answers(dirs["data"]), 30, "the logged answer")
    seen["first_answer"] = first[-1]
    if not seen["drawn_after_lines"] and any(e["newText"] for e in first[-1]["edits"]):
        raise Failed("the suggestion's new text is not drawn in the editor")

    # Escape dismisses it and changes nothing
    before = notes.read_text()
    editor.press("Escape")
    wait(lambda: not editor.suggestion_shown(), 10, "Escape to dismiss the suggestion")
    editor.shot("dismissed")
    seen["after_escape"] = {"drawn": editor.drawn_after_texts(), "file_unchanged": notes.read_text() == before}
    if seen["after_escape"]["drawn"] or not seen["after_escape"]["file_unchanged"]:
        raise Failed(f"Escape left something behind: {seen['after_escape']}")

    accept_flow(editor, dirs, seen, notes)


def accept_flow(editor: Editor, dirs: dict[str, Path], seen: dict[str, Any], notes: Path) -> None:
    count = len(logged_answers(dirs["data"]))
    editor.command("diffgemma: Suggest the next edit")
    wait(editor.suggestion_shown, WAIT_S, "a suggestion on request")
    answer = wait(lambda: logged_answers(dirs["data"])[count:], 30, "the second logged answer")[-1]
    seen["second_answer"] = answer
    target = answer["edits"][0]["range"]["start"]["line"] + 1
    far = 1 if target > 10 else 30
    # "Go to next suggested edit" goes to it from elsewhere
    editor.go_to(far)
    editor.press("Control+Alt+n")
    wait(lambda: editor.cursor_line() == target, 10, f"the jump to line {target}")
    seen["jumped_to"] = editor.cursor_line()
    editor.shot("jumped")
    # at it, the same command goes on to the next suggested place: the other lines that still say
    # the old word (found from the recorded edit, whatever the model proposed)
    if answer["next"] is None:
        raise Failed("the suggestion names no next place")
    editor.press("Control+Alt+n")
    wait(lambda: editor.cursor_line() == answer["next"]["line"] + 1, 10, "the jump to the next place")
    seen["jumped_to_next_place"] = editor.cursor_line()
    # Tab from elsewhere goes to it too, and a second Tab accepts it
    editor.go_to(far)
    before = notes.read_text()
    editor.press("Tab")
    wait(lambda: editor.cursor_line() == target, 10, f"Tab to go to line {target}")
    seen["tab_went_to"] = editor.cursor_line()
    if not editor.suggestion_shown() or notes.read_text() != before:
        raise Failed("the first Tab changed the text instead of going to the suggestion")
    editor.press("Tab")
    wait(lambda: not editor.suggestion_shown(), 10, "Tab to accept the suggestion")
    editor.press("Control+s")
    expected = apply(before, answer["edits"])
    wait(lambda: notes.read_text() == expected, 30, "the accepted suggestion saved")
    editor.shot("accepted")
    seen["accepted_file"] = notes.read_text()
    seen["accepted_matches_the_suggestion"] = True


def ghost_text_flow(editor: Editor, dirs: dict[str, Path], seen: dict[str, Any], out: Path) -> None:
    """Where ghost text is on (todo.log), an edit shows ghost text and no suggestion; Escape hides
    the ghost text and the suggestion comes."""
    editor.press("Control+p")
    editor.page.keyboard.type("todo.log")
    time.sleep(1)
    editor.press("Enter")
    wait(lambda: "todo.log" in str(editor.page.locator(".tabs-container").inner_text()), 30, "todo.log open")
    lsp_log = out / "lsp.log"
    ghost = ".monaco-editor [class*='ghost-text']"
    for attempt in range(3):  # random weights may fill with nothing: type on
        held_back = lsp_log.read_text(errors="replace").count("none while ghost text is showing")
        editor.go_to(25 - attempt)
        editor.press("End")
        editor.page.keyboard.type(" x", delay=80)
        with contextlib.suppress(Failed):
            wait(lambda: editor.page.locator(ghost).count() > 0, 120, "ghost text")
            break
    else:
        raise Failed("no ghost text appeared")
    # the suggestion asked for after the edit was held back because ghost text was showing
    wait(lambda: lsp_log.read_text(errors="replace").count("none while ghost text is showing") > held_back,
         WAIT_S, "the suggestion held back")
    editor.shot("ghost-text")
    seen["ghost_text_held_suggestion_back"] = not editor.suggestion_shown()
    if editor.suggestion_shown():
        raise Failed("a suggestion is shown together with ghost text")
    editor.press("Escape")
    wait(lambda: editor.page.locator(ghost).count() == 0, 10, "Escape to hide the ghost text")
    wait(editor.suggestion_shown, WAIT_S, "a suggestion once the ghost text is gone")
    editor.shot("suggestion-after-ghost-text")
    seen["suggestion_after_ghost_text"] = True


def run(args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Any] = {"ok": False}
    try:
        dirs = prepare(args, out)
        port = free_port()
        config = out / "vscode" / "config.yaml"
        config.write_text(f"bind-addr: 127.0.0.1:{port}\nauth: none\ncert: false\n")
        serve = [args.diffgemma, "serve", "--model", args.model, "--socket", str(dirs["socket"])]
        code = [args.code_server, "--config", str(config), "--user-data-dir", str(dirs["data"]),
                "--extensions-dir", str(dirs["extensions"]), "--disable-telemetry", "--disable-update-check",
                "--disable-workspace-trust", str(dirs["workspace"])]
        with process(serve, out / "daemon.log", server_env(dirs)), \
                process(code, out / "code-server.log", server_env(dirs)):
            wait(lambda: daemon_healthy(dirs["socket"]), 240, "the daemon")
            wait(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 120, "code-server")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                editor = Editor(page, out)
                try:
                    open_notes(editor, f"http://127.0.0.1:{port}/?folder={dirs['workspace']}")
                    check(editor, dirs, seen)
                    ghost_text_flow(editor, dirs, seen, out)
                    seen["ok"] = True
                except Exception:
                    with contextlib.suppress(Exception):
                        editor.shot("failure")
                    raise
                finally:
                    seen["screenshots"] = editor.shots
                    browser.close()
    except Failed as exc:
        seen["error"] = str(exc)
    except Exception as exc:  # a crash of the check itself is reported the same way
        seen["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        (out / "result.json").write_text(json.dumps(seen, indent=2))
    print(json.dumps({k: v for k, v in seen.items() if k != "accepted_file"}, indent=2))
    return 0 if seen["ok"] else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code-server", required=True, help="the code-server executable")
    parser.add_argument("--vsix", required=True, help="the packaged extension")
    parser.add_argument("--diffgemma", required=True, help="the diffgemma executable (daemon and language server)")
    parser.add_argument("--model", required=True, help="the model the daemon serves (a checkpoint folder)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", required=True, help="where screenshots and result.json go")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
