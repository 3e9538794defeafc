"""diffgemma.lsp."""
