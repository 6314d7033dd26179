"""`deploystack env APP`: thin wiring to operations.stack.app_env."""

from typing import Annotated

import typer

from deploystack import console
from deploystack.cli.options import JsonOpt, OutOpt, SpecOpt
from deploystack.target import Target


def env(
    app: Annotated[str, typer.Argument(help="the app", show_default=False)],
    file: SpecOpt = None, output: OutOpt = None,
    show: Annotated[bool, typer.Option("--show", help="print secret values instead of masking them")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the variables an app gets and where each comes from (secret values masked unless --show)."""
    from deploystack.operations import Session, stack

    rows = stack.app_env(Session(Target.of(file, output)), app, show)
    if as_json:
        console.as_json([row.as_dict() for row in rows])
        return
    width = max(len(row.name) for row in rows)
    source_width = max(len(row.source) for row in rows)
    for row in rows:
        console.say(f"{row.name:<{width}}  {row.source:<{source_width}}  {row.value}")


def register(app: typer.Typer) -> None:
    app.command()(env)
