"""diffgemma: local code infilling and inline rewrites with DiffusionGemma."""

__version__ = "0.1.0"
