"""`deploystack export ...`: files to run part or all of the stack somewhere else.

Each subcommand writes one artefact from the same spec (e.g. a Swarm stack file, an offsite replica's
bundle); the work is in operations/plan/render, this module only wires arguments to it.
"""

from __future__ import annotations

import typer

export_app = typer.Typer(help="Write what runs the stack, or part of it, elsewhere.", no_args_is_help=True)
