"""`python -m cli` runs the command line, as the `digitpipe` console script does."""

from cli.app import main

main()
