"""diffgemma.cli."""
