"""`deploystack deploy`, `rollback` and `history`: thin wiring to deploystack.operations (deploys.py)."""

import dataclasses
from typing import Annotated

import typer

from deploystack import console
from deploystack.cli.options import JsonOpt, OutOpt, SpecOpt, VerboseOpt
from deploystack.target import Target

TriggerOpt = Annotated[str | None, typer.Option(help="who or what asked, for the history (default: cli (you))")]
AppArg = Annotated[str | None, typer.Argument(help="one app (default: every app; with --ref, every app from git)")]
RollbackAppArg = Annotated[str | None, typer.Argument(help="one app (default: every app)")]


def deploy(
    app: AppArg = None,
    ref: Annotated[str | None, typer.Option(help="the commit (or branch) of the app's git source")] = None,
    file: SpecOpt = None, output: OutOpt = None, verbose: VerboseOpt = False, trigger: TriggerOpt = None,
) -> None:
    """Build the app's new image and replace its replicas one at a time; roll back if one fails."""
    from deploystack.operations import Session, deploys

    for record in deploys.deploy(Session(Target.of(file, output), console.Progress(verbose)), app, ref, trigger):
        console.say(f"deployed {record.app} {record.ref[:12]} ({record.image}) in {record.seconds:.0f}s")


def rollback(app: RollbackAppArg = None, file: SpecOpt = None, output: OutOpt = None, verbose: VerboseOpt = False,
             trigger: TriggerOpt = None) -> None:
    """Put the app's previous image back on its replicas, one at a time."""
    from deploystack.operations import Session, deploys

    for record in deploys.rollback(Session(Target.of(file, output), console.Progress(verbose)), app, trigger):
        console.say(f"rolled {record.app} back to {record.ref[:12]} ({record.image})")


def show_history(
    app: Annotated[str | None, typer.Argument(help="only this app")] = None, file: SpecOpt = None,
    output: OutOpt = None,
    last: Annotated[int, typer.Option("--last", "-n", help="how many records")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Deploys and rollbacks: app, ref, time, trigger, result."""
    from deploystack import history

    records = [r for r in history.read(Target.of(file, output).output) if app is None or r.app == app][-last:]
    if as_json:
        console.as_json([dataclasses.asdict(r) for r in records])
        return
    console.table("deploys", ["started (UTC)", "app", "kind", "ref", "result", "seconds", "trigger", "image"],
                  [[r.started, r.app, r.kind, r.ref[:12], r.result + (f": {r.message}" if r.message else ""),
                    f"{r.seconds:.0f}", r.trigger, r.image] for r in records])


def register(app: typer.Typer) -> None:
    app.command()(deploy)
    app.command()(rollback)
    app.command(name="history")(show_history)
