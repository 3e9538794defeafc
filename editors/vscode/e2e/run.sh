#!/usr/bin/env bash
# Next-edit suggestions in a real VS Code (code-server 4.100.3, VS Code 1.100.3) through Playwright.
#
#   editors/vscode/e2e/run.sh OUT_DIR
#
# Needs, from the environment:
#   CODE_SERVER        the code-server executable (installed from npm: see the README)
#   PLAYWRIGHT_PYTHON  a python with Playwright installed (pip install playwright; no browser download)
#   DIFFGEMMA          the diffgemma executable (daemon and language server); default: the one on PATH
#   MODEL              the checkpoint the daemon serves (a small one: python -m diffgemma.training.tiny DIR)
#   CHROMIUM           the browser (default /usr/bin/chromium)
#   VSIX               a packaged extension to use instead of building one
# Writes screenshots and result.json to OUT_DIR; exits 0 when every check passed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:?usage: run.sh OUT_DIR}" && cd "$1" && pwd)"
: "${CODE_SERVER:?set CODE_SERVER to the code-server executable}"
: "${PLAYWRIGHT_PYTHON:?set PLAYWRIGHT_PYTHON to a python with playwright}"
: "${MODEL:?set MODEL to the checkpoint the daemon serves}"
diffgemma="${DIFFGEMMA:-$(command -v diffgemma)}"
vsix="${VSIX:-}"
if [ -z "$vsix" ]; then
  vsix="$out/diffgemma.vsix"
  (cd "$here/.." && npm ci --prefer-offline --no-audit --no-fund >/dev/null && npm run build >/dev/null \
    && npx vsce package --out "$vsix" >/dev/null)
fi
exec "$PLAYWRIGHT_PYTHON" "$here/next_edit_e2e.py" --code-server "$CODE_SERVER" --vsix "$vsix" \
  --diffgemma "$diffgemma" --model "$MODEL" --chromium "${CHROMIUM:-/usr/bin/chromium}" --out "$out"
