"""`python -m deploystack`: the CLI (the CDC image runs it this way)."""

from deploystack.cli import main

main()
