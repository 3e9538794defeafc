"""The training program: real DiffusionGemma, micro sizes, a few steps."""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffgemma.evals.eval_suites import HELD_OUT_FILES
from diffgemma.training import corpus, objective
from diffgemma.training import train as T

_SNIPPET = '''
def add(a, b):
    """Return the sum."""
    return a + b


class Box:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value
'''


@pytest.fixture()
def source_root(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    for i in range(6):
        (root / "pkg" / f"mod{i}.py").write_text(_SNIPPET.replace("add", f"add{i}") * 3)
    (root / "tests" / "test_x.py").write_text("def test_x():\n    assert True\n")
    (root / "types.py").write_text("HELD_OUT_MARKER = 1\n" * 50)  # types.py is in the held-out split
    return root


def test_held_out_files_never_in_the_training_list() -> None:
    train_files, held = corpus.split_files()
    assert held, "the standard library must yield some held-out files"
    assert not set(train_files) & set(held)
    assert all(corpus.is_held_out(f) for f in held)
    assert not any(corpus.is_held_out(f) for f in train_files)
    assert not any("/test/" in f"/{f}" or "/tests/" in f"/{f}" for f in train_files)
    assert corpus.split_files() == (train_files, held)  # deterministic
    # the quality suites' files are held out by this rule on any Python
    assert all(corpus.is_held_out(f) for f in HELD_OUT_FILES)
    if sys.version_info[:2] == (3, 11):
        assert held == sorted(HELD_OUT_FILES)


def test_micro_training_run_writes_a_loadable_checkpoint(source_root: Path, tmp_path: Path) -> None:
    from diffgemma.runtime.engine.loading import load_model

    assert corpus.is_held_out("types.py")
    out = tmp_path / "ckpt"
    preset = replace(T.PRESETS["micro"], steps=3)
    result = T.train(out, preset, seed=0, data_root=source_root, threads=1, save_every=2, save_dtype="fp32")
    assert result.steps == 3
    assert all(math.isfinite(loss) for _, loss, _ in result.losses)
    listed = (out / "training_files.txt").read_text().split()
    assert "types.py" not in listed and "tests/test_x.py" not in listed
    assert "pkg/mod0.py" in listed
    with (out / "training_log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(math.isfinite(float(r["loss"])) for r in rows)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 3
    loaded = load_model(str(out))
    assert loaded.model.config.canvas_length == preset.canvas_length
    assert loaded.tokenizer.convert_tokens_to_ids("<bos>") == 2
    # A newline is a token of its own, so an engine prompt healed back to its newline is ordinary.
    ids = loaded.tokenizer("x:\n        y", add_special_tokens=False)["input_ids"]
    assert loaded.tokenizer.convert_ids_to_tokens(ids).count("Ċ") == 1
    assert "Ċ" in loaded.tokenizer.convert_ids_to_tokens(ids)

    # Continuing a run keeps the tokenizer and starts from the saved weights.
    more = tmp_path / "more"
    again = T.train(more, replace(preset, steps=1), seed=1, data_root=source_root, threads=1, save_every=0,
                    init_from=out, save_dtype="fp32")
    assert again.steps == 1
    assert (more / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    assert json.loads((more / "training_args.json").read_text())["init_from"] == str(out)


def test_loss_decreases_on_a_repeated_batch() -> None:
    from transformers import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(0)
    preset = T.PRESETS["micro"]
    model = DiffusionGemmaForBlockDiffusion(T.model_config(preset)).train()
    gen = torch.Generator().manual_seed(0)
    stream = torch.randint(10, preset.vocab_size, (64,), generator=gen)
    prefix, clean = objective.sample_batch(stream, 4, 8, preset.canvas_length, gen)
    noisy = objective.noise_canvas(clean, preset.vocab_size, gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        loss = objective.diffusion_loss(model, prefix, clean, noisy, self_condition=step % 2 == 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.1
    with torch.no_grad():
        noised = objective.diffusion_loss(model, prefix, clean, noisy, self_condition=False, positions="noised")
        everywhere = objective.diffusion_loss(model, prefix, clean, noisy, self_condition=False, positions="all")
    # After training on this batch the kept tokens are easy, the replaced ones are not.
    assert math.isfinite(float(noised)) and float(noised) > float(everywhere)


def test_infill_shaped_noise_keeps_the_tail_clean() -> None:
    gen = torch.Generator().manual_seed(2)
    clean = torch.full((500, 16), 5)
    noisy = objective.noise_canvas(clean, 4096, gen, infill_prob=1.0)
    changed = noisy != clean
    # every row: the noise sits in a prefix of the canvas, everything after the last change is clean
    last = torch.where(changed.any(1), 15 - changed.flip(1).float().argmax(1), torch.full((500,), -1))
    assert int(last.max()) < 15  # the hole never covers the whole canvas
    assert changed.any()


def test_noise_canvas_replaces_about_t_of_the_tokens() -> None:
    gen = torch.Generator().manual_seed(1)
    clean = torch.full((2000, 32), 5)
    noisy = objective.noise_canvas(clean, 4096, gen)
    changed = (noisy != clean).float().mean().item()
    assert 0.45 < changed < 0.55  # E[t] = 0.5 with t ~ U(0, 1) per row
    per_row = (noisy != clean).float().mean(dim=1)
    assert per_row.min() < 0.1 and per_row.max() > 0.9


def test_cli_train_refuses_a_bad_preset(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "diffgemma.cli.app", "train", str(tmp_path / "x"), "--preset", "huge"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown preset" in proc.stderr and "Traceback" not in proc.stderr
