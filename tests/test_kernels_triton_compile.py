"""Every Triton kernel compiles for an H100 (sm_90) target: PTX and ptxas, no GPU needed.

The interpreter tests check what the kernels compute; this checks that the same source
lowers through Triton's real GPU compiler (constexpr branches, dot shapes, dtypes).
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install triton)")

_SAMPLE_SIG = {"logits_ptr": "*fp32", "inv_t_ptr": "*fp32", "tokens_ptr": "*i64", "argmax_ptr": "*i64",
               "entropy_ptr": "*fp32", "lse_ptr": "*fp32", "n_rows": "i32", "vocab": "i32", "stride_row": "i32",
               "seed": "i32", "ROWS": "constexpr", "BLOCK": "constexpr"}
_PROBS_SIG = {"logits_ptr": "*fp32", "inv_t_ptr": "*fp32", "probs_ptr": "*bf16", "vocab": "i32",
              "stride_row": "i32", "stride_out": "i32", "HAS_T": "constexpr", "BLOCK": "constexpr"}
_GEMM_SIG = {"x_ptr": "*bf16", "x_rows_ptr": "*i32", "w_ptr": "*u8", "s_ptr": "*fp16", "lut_ptr": "*fp32",
             "out_ptr": "*bf16", "blk_expert_ptr": "*i32", "blk_start_ptr": "*i32", "blk_end_ptr": "*i32",
             "n_out": "i32", "k_blocks": "i32", "stride_x": "i32", "stride_we": "i32", "stride_wn": "i32",
             "stride_se": "i32", "stride_sn": "i32", "stride_o": "i32", "GATED": "constexpr", "BM": "constexpr",
             "BN": "constexpr", "QB": "constexpr"}


def _compile(fn, signature: dict[str, str], constexprs: dict[str, object]) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    try:
        kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                target=GPUTarget("cuda", 90, 32))
    except (FileNotFoundError, RuntimeError) as exc:  # no ptxas in this Triton build
        if "ptxas" in str(exc):
            pytest.skip(f"Triton's ptxas is not usable here: {exc}")
        raise
    return kernel.asm["ptx"]


@pytest.mark.parametrize(("logits", "rows", "block"), [("*fp32", 1, 2048), ("*bf16", 4, 512)])
def test_sampler_kernel_compiles(logits: str, rows: int, block: int) -> None:
    from diffgemma.kernels.sampler_triton import _kernels

    ptx = _compile(_kernels()[0], {**_SAMPLE_SIG, "logits_ptr": logits}, {"ROWS": rows, "BLOCK": block})
    assert ".entry sample_kernel" in ptx


@pytest.mark.parametrize("has_t", [True, False])
def test_self_conditioning_probs_kernel_compiles(has_t: bool) -> None:
    from diffgemma.kernels.sampler_triton import _kernels

    assert ".entry probs_kernel" in _compile(_kernels()[1], _PROBS_SIG, {"HAS_T": has_t, "BLOCK": 2048})


@pytest.mark.parametrize(("gated", "qb", "bm"), [(True, 64, 16), (False, 64, 64), (False, 32, 16)])
def test_grouped_nf4_gemm_compiles(gated: bool, qb: int, bm: int) -> None:
    from diffgemma.kernels.moe4_triton import _kernel

    ptx = _compile(_kernel(), _GEMM_SIG, {"GATED": gated, "BM": bm, "BN": 64, "QB": qb})
    assert ".entry dq_gemm" in ptx and "mma" in ptx  # tensor-core dot, not a scalar fallback
