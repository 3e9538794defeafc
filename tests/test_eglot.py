"""Emacs eglot in batch mode with the README's snippet, a real `diffgemma lsp` and a real daemon
(tiny checkpoint): completion in the middle of a word, the initializationOptions kept after
eglot's empty didChangeConfiguration and `[null]` configuration answer, and the rewrite code
action applied through workspace/applyEdit after workspace/executeCommand has answered.

The snippet is read from README.md, so the documented configuration is the tested one. Debian
ships eglot for Emacs 28 as `elpa-eglot` (Emacs 29 has it built in); editors/ci-setup.sh
installs both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_lsp_server import Daemon, run_daemon  # same folder: pytest puts it on sys.path

README = Path(__file__).resolve().parents[1] / "README.md"
EMACS = shutil.which("emacs")

SOURCE = "def add(a, b):\n    total = a + b\n    ret\n\n\ndef mul(a, b):\n    return a * b\n"
# (line, column) of cursors in the middle of a word: the end of "    ret", inside "total"
PLACES = [(3, 7), (2, 6), (3, 6)]


def _eglot_available() -> str | None:
    if EMACS is None:
        return "emacs not installed (apt-get install -y emacs-nox elpa-eglot)"
    probe = subprocess.run([EMACS, "--batch", "--eval", "(princ (if (require 'eglot nil t) \"yes\" \"no\"))"],
                           capture_output=True, text=True, timeout=120)
    if probe.stdout.strip() != "yes":
        return "eglot is not available to emacs (apt-get install -y elpa-eglot, or Emacs 29+)"
    return None


_SKIP = _eglot_available()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


def readme_snippet() -> str:
    """The eglot configuration the README's Emacs section shows."""
    text = README.read_text()
    section = text[text.index("### Emacs"):]
    section = section[: section.index("\n### ", 1)]
    blocks = re.findall(r"```elisp\n(.*?)```", section, re.S)
    found = [block for block in blocks if "eglot-server-programs" in block]
    assert len(found) == 1, "the README's Emacs section must hold exactly one eglot snippet"
    return found[0]


def snippet_options(snippet: str) -> dict[str, Any]:
    """The snippet's :initializationOptions plist, e.g. (:maxTokens 64 :debounceMs 0)."""
    match = re.search(r":initializationOptions\s*\(([^()]*)\)", snippet)
    assert match, snippet
    tokens = match.group(1).split()
    return {key.lstrip(":"): json.loads(value) for key, value in zip(tokens[::2], tokens[1::2], strict=True)}


# Runs inside Emacs; writes what it saw to $DG_OUT as JSON and exits. The settings here are the
# test's own (no prompts in batch mode, room for a slow machine); the server configuration is
# only the README's.
DRIVER = r"""
(require 'eglot)
(require 'json)
(require 'cl-lib)
(setq eglot-confirm-server-initiated-edits nil   ; batch mode cannot answer a prompt
      jsonrpc-default-request-timeout 120
      eglot-connect-timeout 120
      eglot-sync-connect 120)
(load (getenv "DG_SNIPPET") nil t)

(defvar dg-result nil)
(defvar dg-events nil)
(defun dg-put (key value) (setq dg-result (plist-put dg-result key value)))
(defun dg-finish ()
  (with-temp-file (getenv "DG_OUT") (insert (json-encode dg-result)))
  (kill-emacs 0))
(defun dg-wait (predicate)
  "Process server messages until PREDICATE holds (the bound only turns a hang into a failure)."
  (let ((tries 0))
    (while (and (not (funcall predicate)) (< tries 3000))
      (accept-process-output nil 0.1)
      (setq tries (1+ tries)))
    (funcall predicate)))
(defun dg-stats ()
  (jsonrpc-request (eglot-current-server) :diffgemma/stats eglot--{}))

(cl-defmethod eglot-handle-notification
  (_server (_method (eql diffgemma/rewriteDone)) &key applied &allow-other-keys)
  (push (if (eq applied t) "done-applied" "done-not-applied") dg-events))
(advice-add 'eglot--apply-workspace-edit :after (lambda (&rest _) (push "edit-applied" dg-events)))

(condition-case err
    (progn
      (find-file (getenv "DG_FILE"))
      (python-mode)
      (apply #'eglot (eglot--guess-contact))
      (dg-put :connected (and (eglot-current-server) t))
      ;; eglot's own didChangeConfiguration {settings: {}} (and the [null] it answers when the
      ;; server asks for its section) must have been handled before the settings are read
      (dg-put :changes-handled
              (dg-wait (lambda () (>= (plist-get (dg-stats) :configurationChanges) 1))))
      (dg-put :settings (plist-get (dg-stats) :settings))
      (dg-put :capf-candidates nil)
      (cl-loop for (line . col) in (read (getenv "DG_PLACES"))
               until (plist-get dg-result :completion)
               do (goto-char (point-min))
                  (forward-line (1- line))
                  (move-to-column col)
                  (let* ((capf (eglot-completion-at-point))
                         (start (nth 0 capf))
                         (word (buffer-substring-no-properties start (point)))
                         (candidates (all-completions word (nth 2 capf))))
                    (when candidates
                      (dg-put :completion
                              (list :line line :col col :word word
                                    :candidates (apply #'vector (mapcar #'substring-no-properties candidates))))
                      ;; what `completion-at-point' does, with the table that gave these candidates
                      ;; (calling it would ask the server again, for a fill of its own)
                      (let ((completion-extra-properties (nthcdr 3 capf)))
                        (completion-in-region start (nth 1 capf) (nth 2 capf)
                                              (plist-get (nthcdr 3 capf) :predicate)))
                      (dg-put :after-completion (buffer-substring-no-properties (point-min) (point-max))))))
      (save-buffer)
      ;; the rewrite: the code action on lines 1-2, as `M-x eglot-code-actions' runs it
      (let ((before (buffer-substring-no-properties (point-min) (point-max))))
        (dg-put :before-rewrite before)
        (eglot-code-actions (point-min)
                            (save-excursion (goto-char (point-min)) (line-end-position 2))
                            "refactor.rewrite" t)
        (push "execute-answered" dg-events)
        (dg-put :rewrite-finished
                (dg-wait (lambda () (cl-some (lambda (e) (string-prefix-p "done-" e)) dg-events))))
        (dg-put :events (apply #'vector (reverse dg-events)))
        (dg-put :after-rewrite (buffer-substring-no-properties (point-min) (point-max)))))
  (error (dg-put :error (error-message-string err))))
(dg-finish)
"""


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    with run_daemon(tiny_model_dir) as d:
        yield d


def run_emacs(tmp_path: Path, daemon: Daemon) -> dict[str, Any]:
    source = tmp_path / "calc.py"
    source.write_text(SOURCE)
    (tmp_path / "snippet.el").write_text(readme_snippet())
    (tmp_path / "drive.el").write_text(DRIVER)
    out = tmp_path / "out.json"
    places = "(" + " ".join(f"({line} . {col})" for line, col in PLACES) + ")"
    env = {
        **daemon.env,
        # the snippet runs `diffgemma lsp` as a user's PATH finds it; the server finds the
        # daemon through DIFFGEMMA_SOCKET, as a user's environment would point it elsewhere
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DIFFGEMMA_SOCKET": str(daemon.socket),
        "DG_OUT": str(out),
        "DG_FILE": str(source),
        "DG_SNIPPET": str(tmp_path / "snippet.el"),
        "DG_PLACES": places,
        "HOME": str(tmp_path),  # no user init, no eglot state from elsewhere
    }
    assert EMACS is not None
    proc = subprocess.run([EMACS, "--batch", "-l", str(tmp_path / "drive.el")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=500)
    assert out.exists(), f"emacs wrote nothing (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert "error" not in result, f"{result['error']}\n{proc.stderr[-3000:]}"
    return result


def test_eglot_completes_mid_word_keeps_its_options_and_applies_the_rewrite(tmp_path: Path, daemon: Daemon) -> None:
    snippet = readme_snippet()
    assert '"diffgemma" "lsp"' in snippet
    result = run_emacs(tmp_path, daemon)
    assert result["connected"] is True
    # the initializationOptions survived eglot's empty configuration
    assert result["changes-handled"] is True
    for key, value in snippet_options(snippet).items():
        assert result["settings"][key] == value, (key, result["settings"])

    # in the middle of a word eglot keeps the item: its text begins with the word
    completion = result["completion"]
    assert completion, "no completion at any of the tried places"
    word, line, col = completion["word"], completion["line"], completion["col"]
    assert word and all(candidate.startswith(word) for candidate in completion["candidates"])
    lines = SOURCE.split("\n")
    start = col - len(word)
    before, after = lines[line - 1][:start], lines[line - 1][col:]
    inserted = result["after-completion"]
    assert inserted.startswith("\n".join(lines[: line - 1]) + "\n" + before + word)
    assert inserted.endswith(after + "\n" + "\n".join(lines[line:]))
    assert len(inserted) > len(SOURCE)

    # the rewrite: executeCommand answered first, then the edit came and was applied
    assert result["rewrite-finished"] is True
    events = result["events"]
    assert events.index("execute-answered") < events.index("edit-applied") < events.index("done-applied")
    old_tail = result["before-rewrite"].split("\n")[2:]
    new_lines = result["after-rewrite"].split("\n")
    assert new_lines[len(new_lines) - len(old_tail):] == old_tail  # only lines 1-2 were rewritten
