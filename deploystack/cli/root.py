"""The typer app: parse, call operations, print. No decisions here; Docker is reached through operations
(and, for the read-only `ps`, `logs`, `lbc bans`, through engine functions named in the command).

Imports of operations, the renderers and the engine stay inside the commands: `deploystack --help` and
`validate` load typer, the spec models and nothing else (tests/unit/test_cli.py holds the line).
"""

import contextlib
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from deploystack import __version__, console
from deploystack.cli.options import (
    FILE_ENV,
    OUTPUT_ENV,
    OUTPUT_HELP,
    CaOpt,
    JsonOpt,
    OutOpt,
    SpecLongOpt,
    SpecOpt,
    VerboseOpt,
    check_file,
)
from deploystack.errors import BAD_PATH_ERRNOS, DeployError, SpecError, SpecFileError, path_problem
from deploystack.target import DEFAULT_SPEC, Target

app = typer.Typer(
    name="deploystack",
    help="One YAML spec in, a production-shaped Django stack out.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,  # plain help, as Compose's: rich's help formatter costs more than the rest of --help
    pretty_exceptions_show_locals=False,  # specs and .env hold passwords
)


def _print_version(value: bool) -> None:
    if value:
        console.say(f"deploystack {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", envvar=FILE_ENV, show_envvar=True,
        help="the spec, for the command that follows (default ./deploystack.yaml)")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", envvar=OUTPUT_ENV, show_envvar=True,
        help=OUTPUT_HELP + ", for the command that follows")] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    """One YAML spec in, a production-shaped Django stack out.

    -f and -o given before the command apply to it (its own -f and -o win).
    """


def _register_groups() -> None:
    from deploystack.cli.db import db_app
    from deploystack.cli.deploy import register as register_deploys
    from deploystack.cli.env import register as register_env
    from deploystack.cli.export import export_app
    from deploystack.cli.lbc import lbc_app
    from deploystack.cli.media import media_app
    from deploystack.cli.run import register as register_run

    register_deploys(app)
    register_env(app)
    register_run(app)
    app.add_typer(db_app, name="db")
    app.add_typer(export_app, name="export")
    app.add_typer(lbc_app, name="lbc")
    app.add_typer(media_app, name="media")


class Engine(StrEnum):
    compose = "compose"
    swarm = "swarm"


EngineOpt = Annotated[Engine, typer.Option(
    "--engine", help="compose: this engine's bridge networks; swarm: `docker stack deploy` (docs/swarm.md)")]


@app.command()
def init(
    file: SpecOpt = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing spec")] = False,
) -> None:
    """Write a commented starter spec."""
    from deploystack.operations.stack import write_starter

    path = check_file(file or DEFAULT_SPEC, "spec file", parent_must_exist=True)
    write_starter(path, force)
    console.say(f"wrote {path}: edit it, then deploystack validate && deploystack up")


@app.command()
def validate(file: SpecOpt = None) -> None:
    """Check the spec; print ok, or every problem as `field.path (line N): message`."""
    from deploystack.spec import load_stack

    load_stack(Target.of(file, None).spec)
    console.say("ok")


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editors and CI: shorthands such as `redis: true` included)."""
    import json

    from deploystack.spec.schema import stack_schema

    console.say(json.dumps(stack_schema(), indent=2))


@app.command()
def generate(
    file: SpecOpt = None,
    output: OutOpt = None,
    ca_bundle: CaOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would change, write nothing")] = False,
) -> None:
    """Write the compose project: compose.yaml, .env, config files, build contexts."""
    from deploystack.operations import Session, stack

    target = Target.of(file, output)
    changes = stack.generate(Session(target, ca_bundle=ca_bundle), dry_run)
    verb = "would be" if dry_run else ""
    for label, names in (("created", changes.created), ("changed", changes.changed), ("removed", changes.removed)):
        for name in names:
            console.say(f"{label:8} {name}")
    console.say(
        f"{target.output}: {len(changes.created)} {verb} created, {len(changes.changed)} {verb} changed, "
        f"{len(changes.removed)} {verb} removed, {len(changes.identical)} identical".replace("  ", " ")
    )


@app.command()
def build(
    file: SpecOpt = None, output: OutOpt = None, ca_bundle: CaOpt = None, verbose: VerboseOpt = False,
    force: Annotated[bool, typer.Option(help="rebuild even when the image is up to date")] = False,
) -> None:
    """Build every image the stack needs (skipping those whose build context is unchanged)."""
    from deploystack.operations import Session, stack

    with console.progress(verbose) as report:
        built = stack.build(Session(Target.of(file, output), report, ca_bundle), force)
    console.say(f"built {len(built)} image(s)" if built else "all images up to date")


@app.command()
def up(file: SpecOpt = None, output: OutOpt = None, ca_bundle: CaOpt = None, verbose: VerboseOpt = False,
       engine: EngineOpt = Engine.compose) -> None:
    """Generate if stale, build if needed, then bring the stack to the spec and wait until healthy."""
    from deploystack.operations import Session, stack, swarm

    target = Target.of(file, output)
    if engine is Engine.swarm:
        session = Session(target, console.Progress(verbose), ca_bundle)
        swarm.up_swarm(session)
        console.say("swarm stack is up")
    else:
        with console.progress(verbose) as report:
            session = Session(target, report, ca_bundle)
            outcome = stack.up(session)
        console.say("stack is up" + ("" if outcome.changed else " (nothing changed)"))
    lbc = session.stack.lbc  # the spec as up loaded it
    https = "" if lbc.ports.https == 443 else f":{lbc.ports.https}"
    console.say(f"open https://{lbc.bind if lbc.bind != '0.0.0.0' else 'localhost'}{https}/")


@app.command()
def scale(
    targets: Annotated[list[str], typer.Argument(help="apc=N for every app, or APP=N", show_default=False)],
    file: SpecOpt = None, output: OutOpt = None, ca_bundle: CaOpt = None, verbose: VerboseOpt = False,
    engine: EngineOpt = Engine.compose,
) -> None:
    """Set replica counts in the spec and converge with no dropped requests."""
    from deploystack.operations import Session, stack

    session = Session(Target.of(file, output), console.Progress(verbose), ca_bundle)
    replicas = stack.scale(session, targets, swarm=engine is Engine.swarm)
    console.say("scaled " + ", ".join(f"{app} to {n}" for app, n in replicas.items()))


@app.command()
def down(
    file: SpecOpt = None, output: OutOpt = None, verbose: VerboseOpt = False,
    volumes: Annotated[bool, typer.Option("--volumes", help="also remove the data volumes")] = False,
    engine: EngineOpt = Engine.compose,
) -> None:
    """Remove the stack's containers and networks (volumes kept unless --volumes)."""
    from deploystack.operations import Session, stack

    stack.down(Session(Target.of(file, output), console.Progress(verbose)), volumes, swarm=engine is Engine.swarm)
    console.say("stack is down" + (" and its volumes removed" if volumes else "; volumes kept"))


@app.command()
def prune(
    file: SpecOpt = None, output: OutOpt = None, ca_bundle: CaOpt = None, verbose: VerboseOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would go, remove nothing")] = False,
) -> None:
    """Remove images no container uses and this spec no longer wants: older role and app image tags."""
    from deploystack.cli.media import human
    from deploystack.operations import Session, stack

    stale = stack.prune(Session(Target.of(file, output), console.Progress(verbose), ca_bundle), dry_run)
    for tag, size in stale:
        console.say(f"{'would remove' if dry_run else 'removed'} {tag} ({human(size)})")
    total = human(sum(size for _, size in stale))
    console.say(f"{len(stale)} image(s){' would be' if dry_run else ''} removed, up to {total} "
                "(layers other images share stay)" if stale else "nothing to remove")


@app.command()
def ps(
    file: SpecOpt = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = Engine.compose,
) -> None:
    """Services, replicas, state and health (on a swarm: each task and the node it runs on)."""
    from deploystack.engine import client, status
    from deploystack.operations import Session

    project = Session(Target.of(file, None)).stack.project
    if engine is Engine.swarm:
        from deploystack.engine import swarm

        docker_client = client.connect()
        swarm.require_manager(docker_client)
        tasks = swarm.ps(docker_client, project)
        if as_json:
            console.as_json([task.as_dict() for task in tasks])
            return
        console.table(f"swarm stack {project}", ["service", "task", "node", "state", "error"],
                      [(t.service, t.task, t.node, t.state, t.error) for t in tasks])
        return
    rows = status.ps(client.connect(), project)
    if as_json:
        console.as_json([row.as_dict() for row in rows])
        return
    console.table(f"project {project}", ["service", "container", "state", "health", "ports"],
                  [(r.service, r.name, r.state, r.health, r.ports) for r in rows])


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="one service (default: all)")] = None,
    # -f is --follow here, as for `docker compose logs`.
    file: SpecLongOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep following (as in Compose)")] = False,
    tail: Annotated[str, typer.Option("--tail", "-n", help="lines of history per container, or all")] = "100",
    since: Annotated[str | None, typer.Option(
        help="only lines since a duration ago (10m, 1h30m), a time (2026-12-01T19:00:00Z) or UNIX seconds",
    )] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t", help="prefix each line with its time")] = False,
) -> None:
    """Show logs, each line prefixed with its container's name."""
    from deploystack.engine import client, status
    from deploystack.logopts import parse_since, parse_tail
    from deploystack.operations import Session

    lines = parse_tail(tail)
    start = None if since is None else parse_since(since, time.time())
    project = Session(Target.of(file, None)).stack.project
    width = 0

    def emit(name: str, line: str) -> None:
        nonlocal width
        width = max(width, len(name))
        console.say(f"{name:<{width}} | {line}")

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends `logs -f`: not an error
        status.logs(client.connect(), project, service, follow, lines, emit, since=start, timestamps=timestamps)


@app.command()
def diagram(
    file: SpecOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="FILE.svg, .png, .dot or .mmd")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="dot, mermaid, svg or png (default: from -o's suffix, else mermaid)")] = None,
) -> None:
    """Draw the stack: roles, services and replicas, the two networks, published ports, who talks to whom."""
    from deploystack import diagram as drawing
    from deploystack.operations import Session

    chosen = drawing.choose_format(fmt, output)
    if output is not None:
        check_file(output, "-o")
    data = drawing.produce(drawing.diagram_of(Session(Target.of(file, None)).stack), chosen)
    if output is not None:
        drawing.write_atomically(output, data)
        console.say(f"wrote {output} ({chosen.value})")
    else:
        console.say(data.decode().rstrip("\n"))


@app.command()
def doctor(
    file: SpecOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check what `up` needs (engine, disk, base image, CA bundle, LBC ports, spec); print a fix for each failure."""
    from deploystack import doctor as checkup

    checks = checkup.run(file or DEFAULT_SPEC)
    if as_json:
        console.as_json([check.as_dict() for check in checks])
    else:
        for line in checkup.report_lines(checks):
            console.say(line)
    if any(check.failed for check in checks):
        raise typer.Exit(1)


_register_groups()


def main() -> None:
    """Entry point: every DeployError becomes its message and exit code, never a traceback."""
    try:
        app(standalone_mode=True)
    except SpecFileError as exc:
        console.error("; ".join(problem.message for problem in exc.problems))
        sys.exit(exc.exit_code)
    except SpecError as exc:
        console.err.out(f"{exc.file}: invalid spec")
        console.problems([str(p) for p in exc.problems])
        sys.exit(exc.exit_code)
    except DeployError as exc:
        console.error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(130)
    except OSError as exc:  # a path no check above foresaw (permissions, /proc, a full disk): one line
        console.error(path_problem(exc))
        sys.exit(2 if exc.errno in BAD_PATH_ERRNOS else 1)
