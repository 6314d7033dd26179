"""The command line: the root app with its global options, the commands of no area and `main`
(`root.py`), one module per area (`db`, `deploy`, `env`, `export`, `lbc`, `media`, `run`: a typer
sub-app each, or commands registered on the root) and the options they share (`options.py`).
Terminal output is console.py's.

No `from __future__ import annotations` in this package: typer reads the annotations of every command at
each start, and annotations kept as strings cost an eval each (about half of building the command tree).
"""

from deploystack.cli.root import app, main

__all__ = ["app", "main"]
