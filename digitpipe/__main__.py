"""`python -m digitpipe` runs the CLI."""

from digitpipe.cli import main

main()
