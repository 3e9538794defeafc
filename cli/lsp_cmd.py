"""`diffgemma lsp`: run the language server (stdio by default; TCP for debugging)."""

from __future__ import annotations

from functools import partial

import typer

from diffgemma.cli.options import int_option
from diffgemma.runtime.api import config


def lsp(
    stdio: bool = typer.Option(True, "--stdio", help="Speak LSP on stdin/stdout (what editors start)."),
    tcp: bool = typer.Option(False, "--tcp", help="Listen on TCP instead, for debugging with a client."),
    host: str = typer.Option("127.0.0.1", "--host", envvar=config.ENV_LSP_HOST, help="TCP host."),
    port: int = typer.Option(
        2087, "--port", envvar=config.ENV_LSP_PORT, parser=partial(int_option, 1, 65535), metavar="INTEGER",
        help="TCP port (1-65535).",
    ),
    log_file: str | None = typer.Option(
        None,
        "--log-file",
        envvar=config.ENV_LSP_LOG,
        help="Write the server's log here (stderr otherwise).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
) -> None:
    """Run the diffgemma language server: ghost-text infill and "Rewrite selection"."""
    import logging

    from diffgemma.lsp.server import serve

    logging.basicConfig(
        filename=log_file,
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    serve(tcp=tcp, host=host, port=port)


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command("lsp")(lsp)
