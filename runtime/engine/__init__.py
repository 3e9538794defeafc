"""diffgemma.runtime.engine: the denoising engine (loop, steps, prefix cache, prompt, loading)."""
