"""`python -m diffgemma.lsp`: the language server on stdio (same as `diffgemma lsp`)."""

from __future__ import annotations

from .server import serve

if __name__ == "__main__":
    serve()
