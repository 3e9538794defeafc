"""FIM templates inside a completion prompt: taken apart into prefix, suffix and extra files.

The parser is pure (fast tests); one daemon checks that, with the same seed, the template form and
the explicit prompt + suffix form give the same text for every family.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon_api import Daemon

from diffgemma.runtime.api.protocol import ExtraFile
from diffgemma.runtime.daemon.fim import parse_fim_prompt, split_prompt

PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\nprint(add(1, 2))\n"

TEMPLATES = {
    "starcoder": f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>",
    "qwen": f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>",
    "codegemma": f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>",
    "deepseek": f"<｜fim▁begin｜>{PREFIX}<｜fim▁hole｜>{SUFFIX}<｜fim▁end｜>",
    "codellama": f"<PRE> {PREFIX} <SUF>{SUFFIX} <MID>",
    "codestral": f"[SUFFIX]{SUFFIX}[PREFIX]{PREFIX}",
}


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_each_family_gives_back_prefix_and_suffix(family: str) -> None:
    parts = parse_fim_prompt(TEMPLATES[family])
    assert parts is not None
    assert (parts.prefix, parts.suffix, parts.extra) == (PREFIX, SUFFIX, [])


def test_repository_context_becomes_extra_files() -> None:
    qwen = ("<|repo_name|>demo\n<|file_sep|>util.py\ndef sub(a, b):\n    return a - b\n"
            f"<|file_sep|>main.py\n<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>")
    parts = parse_fim_prompt(qwen)
    assert parts is not None and parts.path == "main.py"
    assert parts.extra == [ExtraFile("util.py", "def sub(a, b):\n    return a - b\n")]
    assert (parts.prefix, parts.suffix) == (PREFIX, SUFFIX)
    gemma = f"<|file_separator|>a.py\nx = 1\n<|file_separator|>b.py\n<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}"
    parts = parse_fim_prompt(gemma)
    assert parts is not None and parts.extra == [ExtraFile("a.py", "x = 1\n")] and parts.prefix == PREFIX
    starcoder2 = ("<repo_name>r<file_sep>a.py\nx = 1\n<file_sep>b.py\n"
                  f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>")
    parts = parse_fim_prompt(starcoder2)
    assert parts is not None and parts.extra == [ExtraFile("a.py", "x = 1\n")] and parts.suffix == SUFFIX


def test_a_plain_prompt_stays_a_prefix() -> None:
    for prompt in ("def f(x):\n    return ", "", "x = '<fim' + 'prefix>'\n", "a [SUFFIX] without its pair"):
        parts = split_prompt(prompt)
        assert (parts.prefix, parts.suffix, parts.extra) == (prompt, "", [])


def test_context_markers_without_a_fim_part_are_continuation() -> None:
    parts = split_prompt("<|file_sep|>a.py\nx = 1\n<|file_sep|>b.py\ny = ")
    assert parts.extra == [ExtraFile("a.py", "x = 1\n")] and parts.prefix == "y = " and parts.suffix == ""


def test_the_first_family_marker_wins() -> None:
    # Code that quotes another family's marker inside a StarCoder template.
    prompt = "<fim_prefix>s = '[SUFFIX]x[PREFIX]'\n<fim_suffix>\n<fim_middle>"
    parts = parse_fim_prompt(prompt)
    assert parts is not None and parts.family == "starcoder" and parts.prefix == "s = '[SUFFIX]x[PREFIX]'\n"


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgf", dir="/tmp"))
    # no time limit: the same text from every form is the promise when no limit was hit (syntax
    # repair of the piped-in Python may take long on a busy machine)
    d = Daemon(tmp, tiny_model_dir, "--max-request-seconds", "0")
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_template_and_explicit_forms_give_the_same_text(daemon: Daemon) -> None:
    common = {"max_tokens": 6, "seed": 11, "model": "anything"}
    with daemon.http() as http:
        explicit = http.post("/v1/completions", json={"prompt": PREFIX, "suffix": SUFFIX, **common}).json()
        fim = http.post("/v1/fim/completions", json={"prompt": PREFIX, "suffix": SUFFIX, **common}).json()
        texts = {family: http.post("/v1/completions", json={"prompt": template, **common}).json()
                 for family, template in TEMPLATES.items()}
        llama = http.post("/completion", json={"prompt": TEMPLATES["starcoder"], "n_predict": 6, "seed": 11}).json()
    want = explicit["choices"][0]["text"]
    for family, data in texts.items():
        assert data["choices"][0]["text"] == want, family
    assert fim["choices"][0]["message"]["content"] == want
    assert llama["content"] == want
