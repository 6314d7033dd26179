"""`deploystack manage`, `run` and `exec`: commands in a new one-off container of an app, or in a running
container, attached to this terminal; the command's exit code is deploystack's."""

import os
import re
from collections.abc import Mapping
from typing import Annotated

import typer

from deploystack.cli.options import OutOpt, SpecOpt
from deploystack.errors import UsageError
from deploystack.target import Target

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

EnvOpt = Annotated[list[str] | None, typer.Option(
    "--env", "-e", help="NAME=VALUE for the command (NAME alone: this shell's value), as docker run -e")]
AppArg = Annotated[str, typer.Argument(help="the app (apc.apps.<name> in the spec)", show_default=False)]
# manage passes options it does not know (--noinput, --check) on to manage.py; after `--` every word goes
# there, deploystack's own -e/-f/-o included (dumpdata -o FILE: `manage APP -- dumpdata -o FILE`).
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def parse_env(values: list[str] | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`-e NAME=VALUE` or `-e NAME` (the value from `environ`, default this process's environment)."""
    environ = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for value in values or []:
        name, equals, text = value.partition("=")
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(f"-e {value!r}: give NAME=VALUE, NAME a variable name (letters, digits, _)")
        if not equals:
            if name not in environ:
                raise UsageError(f"-e {name}: {name} is not set in this shell; give -e {name}=VALUE "
                                 "(a -e of the command itself goes after --)")
            text = environ[name]
        env[name] = text
    return env


def register(app: typer.Typer) -> None:
    app.command(context_settings=PASS_THROUGH)(manage)
    app.command(name="run")(run_command)
    app.command(name="exec")(exec_command)


def manage(
    app: AppArg,
    arguments: Annotated[list[str] | None, typer.Argument(
        help="for manage.py (migrate, createsuperuser, shell, loaddata -; its options pass through)",
        show_default=False)] = None,
    env: EnvOpt = None, file: SpecOpt = None, output: OutOpt = None,
) -> None:
    """Run `python manage.py ARGUMENTS` in a new container of APP (its image, environment and networks)."""
    from deploystack.operations import Session, oneoff

    command = ["python", "manage.py", *(arguments or [])]
    raise typer.Exit(oneoff.run_oneoff(Session(Target.of(file, output)), app, command, parse_env(env)))


def run_command(
    app: AppArg,
    command: Annotated[list[str], typer.Argument(help="the command, after --", show_default=False)],
    env: EnvOpt = None, file: SpecOpt = None, output: OutOpt = None,
) -> None:
    """Run a command in a new container of APP (its image, environment and networks): run APP -- CMD..."""
    from deploystack.operations import Session, oneoff

    raise typer.Exit(oneoff.run_oneoff(Session(Target.of(file, output)), app, command, parse_env(env)))


def exec_command(
    service: Annotated[str, typer.Argument(help="backend, db-primary, redis, lbc, ...", show_default=False)],
    command: Annotated[list[str], typer.Argument(help="the command, after --", show_default=False)],
    index: Annotated[int, typer.Option("--index", help="which replica (1..N)", min=1)] = 1,
    file: SpecOpt = None, output: OutOpt = None,
) -> None:
    """Run a command in a running container of SERVICE: exec SERVICE [--index N] -- CMD..."""
    from deploystack.operations import Session, oneoff

    raise typer.Exit(oneoff.exec_in(Session(Target.of(file, output)), service, index, command))
