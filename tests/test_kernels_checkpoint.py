"""4-bit checkpoints across format versions: v2 (bitsandbytes linears) is written; v1 checkpoints,
written before the linears moved to bitsandbytes, still load with exactly their stored weights, and
what cannot be read fails with one line that says what to do."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from float_model import decoder_logits, full_model, rel_err  # same folder: on sys.path

from diffgemma.kernels import linear4, moe4
from diffgemma.kernels.checkpoint import load_quantized, save_quantized
from diffgemma.kernels.quant4 import dequantize_nf4, quantize_nf4
from diffgemma.kernels.quantize import QUANT_KEY, WEIGHTS_FILE, QuantizeError, get_info, quantize_model

# The 4-bit model's distance to the float model (relative error of the decoder logits) may differ
# between v1's linears and v2's (bitsandbytes) by at most this much; measured 0.0010 on the tiny
# model (0.5345 vs 0.5355) and 0.0010 on a 4-layer, hidden-512 toy (0.9764 vs 0.9754).
V2_VS_V1_DISTANCE_TO_FLOAT = 0.02


def write_v1(src: Path, dst: Path, block: int = 64) -> Path:
    """A version-1 checkpoint of the float checkpoint ``src``, as diffgemma wrote them before v2.

    v1 differs from v2 in the linears only: each stored as ``<name>.qweight`` (uint8 (out, in/2),
    ``quant4``'s halves-paired nibbles) and ``<name>.absmax`` (fp16 (out, in/block)), shared layers
    once with aliases, and the entry ``{"format": "nf4-blockwise-halfpair", "version": 1, ...}``.
    (Checked once against a checkpoint written by the v1 code: the same tensors, aliases and entry.)"""
    from safetensors import safe_open
    from safetensors.torch import save_file

    full = full_model(src)
    save_quantized(quantize_model(copy.deepcopy(full)), dst)
    with safe_open(str(dst / WEIGHTS_FILE), framework="pt") as f:
        aliases = json.loads((f.metadata() or {})["aliases"])
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    config = json.loads((dst / "config.json").read_text())
    linears = config[QUANT_KEY]["linears"]
    for name in linears:
        for key in [k for k in (*tensors, *aliases) if k.startswith(f"{name}.weight")]:
            tensors.pop(key, None)
            target = aliases.pop(key, None)
            if target is not None and key == f"{name}.weight":
                owner = target.removesuffix(".weight")
                aliases.update({f"{name}.qweight": f"{owner}.qweight", f"{name}.absmax": f"{owner}.absmax"})
        if f"{name}.qweight" not in aliases:
            qweight, absmax, _ = quantize_nf4(full.get_submodule(name).weight.detach(), block)
            tensors[f"{name}.qweight"], tensors[f"{name}.absmax"] = qweight, absmax
    save_file(tensors, str(dst / WEIGHTS_FILE), metadata={"aliases": json.dumps(aliases),
                                                           "format": "nf4-blockwise-halfpair"})
    config[QUANT_KEY] = {"block": block, "experts": config[QUANT_KEY]["experts"], "format": "nf4-blockwise-halfpair",
                         "linears": linears, "version": 1, "weights": WEIGHTS_FILE}
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dst


@pytest.fixture(scope="module")
def v1_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_v1(tiny_model_dir, tmp_path_factory.mktemp("v1") / "ckpt")


def test_v1_checkpoint_loads_with_its_stored_weights(tiny_model_dir: Path, v1_dir: Path) -> None:
    from safetensors import safe_open

    model = load_quantized(v1_dir, "cpu", torch.float32)
    assert get_info(model)["version"] == 1
    with safe_open(str(v1_dir / WEIGHTS_FILE), framework="pt") as f:
        aliases = json.loads((f.metadata() or {})["aliases"])
        for name in get_info(model)["linears"]:
            layer = model.get_submodule(name)
            assert linear4.is_linear4(layer)
            key = aliases.get(f"{name}.qweight", f"{name}.qweight").removesuffix(".qweight")
            stored = dequantize_nf4(f.get_tensor(f"{key}.qweight"), f.get_tensor(f"{key}.absmax"), 64)
            assert torch.equal(linear4.dequantized(layer), stored), name  # repacked, not requantized
    dec, enc = model.model.decoder, model.model.encoder.language_model
    assert dec.layers[0].self_attn.q_proj is enc.layers[0].self_attn.q_proj
    assert moe4.is_quantized(dec.layers[1].experts) and dec.layers[1].experts is enc.layers[1].experts
    # today's linears stay as close to the float model as v1's were
    ref = decoder_logits(full_model(tiny_model_dir))
    v1_err = rel_err(ref, decoder_logits(model))
    v2_err = rel_err(ref, decoder_logits(quantize_model(full_model(tiny_model_dir))))
    assert abs(v2_err - v1_err) < V2_VS_V1_DISTANCE_TO_FLOAT, (v1_err, v2_err)


def test_v1_checkpoint_serves_through_the_engine(v1_dir: Path) -> None:
    from diffgemma.runtime.engine.engine import Engine
    from diffgemma.runtime.engine.types import SamplingSettings

    engine = Engine.load(str(v1_dir))
    result = engine.infill("def add(a, b):\n    ", "\n", settings=SamplingSettings(seed=0, steps=2))
    assert result.timings.steps >= 1


def test_unreadable_checkpoints_fail_with_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    from diffgemma.runtime.engine.loading import ModelLoadError, load_model

    narrow = write_v1(tiny_model_dir, tmp_path / "v1-block16", block=16)  # v1 with blocks bitsandbytes lacks
    with pytest.raises(QuantizeError, match=r"cannot read 4-bit layer .*16-weight blocks.*diffgemma quantize") as exc:
        load_quantized(narrow, "cpu", torch.float32)
    assert "\n" not in str(exc.value)
    newer = tmp_path / "v3"
    shutil.copytree(narrow, newer)
    config = json.loads((newer / "config.json").read_text())
    config[QUANT_KEY].update(format="diffgemma-nf4", version=3)
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"v3; this diffgemma reads .* written by a newer diffgemma") as load:
        load_model(str(newer))
    assert "\n" not in str(load.value)
