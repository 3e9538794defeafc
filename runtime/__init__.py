"""diffgemma.runtime."""
