"""`deploystack export ...`: files to run part or all of the stack somewhere else.

Each subcommand writes one artefact from the same spec (e.g. a Swarm stack file, an offsite replica's
bundle); the work is in operations/plan/render, this module only wires arguments to it.
"""

from pathlib import Path
from typing import Annotated

import typer

from deploystack import console
from deploystack.cli.options import CaOpt, SpecOpt, StackOutOpt, check_file, check_folder
from deploystack.target import Target

export_app = typer.Typer(help="Write what runs the stack, or part of it, elsewhere.", no_args_is_help=True)


@export_app.command()
def replica(
    output: Annotated[Path, typer.Option("--output", "-o",
                                         help="the folder to write (new, empty, or an earlier export)")],
    file: SpecOpt = None,
    stack_output: StackOutOpt = None,
    ca_bundle: Annotated[Path | None, typer.Option(
        "--ca-bundle", help="CA bundle for pip in builds, as given to up (default: the host's)")] = None,
) -> None:
    """The offsite replica (dbc.offsite) as a folder to copy to the other host: image, CA, credentials, run.sh."""
    from deploystack.operations import Session, export

    check_folder(output, "-o")
    changes = export.export_replica(Session(Target.of(file, stack_output), ca_bundle=ca_bundle), output)
    console.say(f"{output}: {len(changes.created)} created, {len(changes.changed)} changed, "
                f"{len(changes.identical)} identical; copy it to the other host and run ./run.sh there "
                "(README.md says more)")


@export_app.command("swarm")
def swarm(
    file: SpecOpt = None,
    stack_output: StackOutOpt = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="the stack file (default: swarm/stack.yaml in the output folder)")] = None,
    ca_bundle: CaOpt = None,
) -> None:
    """Write a stack file for `docker stack deploy` (configs and secrets beside it, under stack/swarm/)."""
    from deploystack.operations import Session, swarm

    if output is not None:
        check_file(output, "-o")
    from deploystack.render.swarm import not_carried_over

    session = Session(Target.of(file, stack_output), ca_bundle=ca_bundle)
    exported = swarm.export_swarm(session, output)
    for note in not_carried_over(session.stack, exported.plan):
        console.warning(note)
    console.say(f"wrote {exported.stack_file}; deploy it with: docker stack deploy -c {exported.stack_file} "
                f"--resolve-image never {exported.plan.project} (or deploystack up --engine swarm)")
