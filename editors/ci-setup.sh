#!/usr/bin/env bash
# What the editor tests need, for CI (idempotent; run as root, or as a user with sudo):
#   - Neovim, for tests/test_nvim_*.py (Debian's package: 0.7.2 on Debian 12, which the plugin supports)
#   - Emacs (emacs-nox) with eglot, for tests/test_eglot.py (Emacs 29+ has eglot built in; for
#     Debian 12's Emacs 28 it is the elpa-eglot package)
#   - Node.js + npm, for tests/test_vscode_*.py (build, unit tests and .vsix packaging)
#   - the VS Code extension's locked npm packages (npm ci), so the tests find them in the npm cache
# Without these the tests skip with a reason; nothing else in the project needs them.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'editors/ci-setup: %s\n' "$*"; }
run() { say "+ $*"; "$@"; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

missing=()
command -v nvim >/dev/null 2>&1 || missing+=(neovim)
command -v emacs >/dev/null 2>&1 || missing+=(emacs-nox)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  run "${sudo_cmd[@]}" apt-get update -qq
  run "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "neovim, node and npm already installed"
fi

has_eglot() { emacs --batch --eval "(kill-emacs (if (require 'eglot nil t) 0 1))" >/dev/null 2>&1; }
if ! has_eglot; then
  export DEBIAN_FRONTEND=noninteractive
  # the package lists may be stale when nothing above needed installing
  run "${sudo_cmd[@]}" apt-get update -qq
  run "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends elpa-eglot
fi

say "nvim: $(nvim --version | head -n 1)"
say "emacs: $(emacs --version | head -n 1), eglot: $(has_eglot && echo yes || echo no)"
say "node: $(node --version), npm: $(npm --version)"

# the lockfile pins every package; ci is a clean, reproducible install
(cd editors/vscode && run npm ci --no-audit --no-fund)
say "done"
