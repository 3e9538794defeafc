"""Schemathesis, a property-based fuzzer no one here wrote, against a real daemon and its own document.

`benchmarks/fuzz_api.py` starts `diffgemma serve` on loopback TCP with a bearer token (tiny
random-weight model) and runs Schemathesis over every operation of /openapi.json with all its checks
(status codes, headers, content types and bodies as documented, each NDJSON line and server-sent
event, valid data accepted, invalid data refused, the token enforced, 405 with Allow for undeclared
methods, no 5xx), a fixed seed and a bounded number of examples. Zero failures, errors or warnings.
The longer run is the same script with its default budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from diffgemma.runtime.daemon.dispatch import ServerInfo
from diffgemma.runtime.daemon.openapi import openapi_document

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_api.py"


def test_schemathesis_finds_nothing() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--examples", "10", "--seed", "1", "--json"],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.stdout.strip(), done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    paths = openapi_document(ServerInfo(token="t"), {})["paths"]
    operations = sum(len(item) for path, item in paths.items() if path != "/openapi.json")  # not the document itself
    assert result["operations"] == operations  # every operation was tested
    assert result["cases"] > 1000
    assert (result["failures"], result["errors"], result["warnings"]) == (0, 0, {}), result["output"]
    assert result["exit_code"] == 0 and done.returncode == 0, result["output"]
