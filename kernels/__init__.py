"""diffgemma.kernels."""
