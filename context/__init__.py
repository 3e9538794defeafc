"""diffgemma.context."""
