"""`python -m diffgemma.cli` runs the command line."""

from diffgemma.cli.app import main

main()
