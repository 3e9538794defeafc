"""diffgemma.kernels: the fused denoising-step sampler and 4-bit (NF4) weights for DiffusionGemma.

- ``sampler``: ``fused_sample`` / ``reference_sample`` / ``self_conditioning_embeddings`` (torch, chunked)
- ``sampler_triton``: the same on CUDA with Triton
- ``self_conditioning``: a decoder hook that uses the fused self-conditioning
- ``quant4``: the experts' NF4 blockwise format; ``moe4``: the 4-bit experts, registered as
  transformers' ``diffgemma_nf4`` experts implementation; ``moe4_triton``: the grouped dequantizing GEMM
- ``linear4``: the 4-bit linears, bitsandbytes' NF4 ``Linear4bit``
- ``quantize``: a model made 4-bit in memory or while reading a checkpoint;
  ``checkpoint``: 4-bit checkpoints (write, load, earlier versions)

Importing this package imports nothing heavy; each module imports torch itself.
"""
