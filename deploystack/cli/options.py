"""Options shared by the CLI's commands, so that `-f`, `-o` and the rest mean the same everywhere.

`-f/--file` and `-o/--output` may also come before the subcommand (`deploystack -f x.yml logs -f`, as
Compose users type it) or from DEPLOYSTACK_FILE / DEPLOYSTACK_OUTPUT. A subcommand's own option wins,
then the one before the subcommand, then the environment, then the default.

Kept light: `--help` and `validate` import this, so nothing here may pull in the renderers or Docker.
"""

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from deploystack.errors import UsageError

FILE_ENV = "DEPLOYSTACK_FILE"
# The CDC container has it in its environment, so a deploy from inside finds the stack's output folder
# (plan/cdc.py's OUTPUT_PATH: a unit test holds the two equal).
OUTPUT_ENV = "DEPLOYSTACK_OUTPUT"


def _given_on_command_line(ctx: typer.Context | Any, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _spec_file(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    root = ctx.find_root()
    if root is ctx or param.name is None or _given_on_command_line(ctx, param.name):
        return value
    given: Path | None = root.params.get("file")
    return given if given is not None else value


def _stack_output(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    root = ctx.find_root()
    if root is not ctx and param.name is not None and not _given_on_command_line(ctx, param.name) \
            and _given_on_command_line(root, "output"):  # `deploystack -o DIR cmd` beats DEPLOYSTACK_OUTPUT
        value = root.params.get("output")
    return value if value is None else check_folder(value, "output folder")


SPEC_HELP = f"the spec (default ./deploystack.yaml, or ${FILE_ENV})"
OUTPUT_HELP = "the stack's output folder, as given to generate/up (default: stack/ beside the spec)"

SpecOpt = Annotated[Path | None, typer.Option("--file", "-f", help=SPEC_HELP, callback=_spec_file)]
# `logs`, where -f means --follow as in Compose.
SpecLongOpt = Annotated[Path | None, typer.Option("--file", help=SPEC_HELP, callback=_spec_file)]
OutOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", envvar=OUTPUT_ENV, show_envvar=True, help=OUTPUT_HELP, callback=_stack_output)]
# The same folder, for commands whose -o names what they write.
StackOutOpt = Annotated[Path | None, typer.Option(
    "--stack-output", envvar=OUTPUT_ENV, show_envvar=True, help=OUTPUT_HELP, callback=_stack_output)]
CaOpt = Annotated[Path | None, typer.Option("--ca-bundle", help="CA bundle for pip in builds (default: the host's)")]
VerboseOpt = Annotated[bool, typer.Option(
    "--verbose", "-v", help="show the details of each step: build output, images removed or kept, what is awaited")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _first_existing(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_folder(path: Path, what: str) -> Path:
    """A folder to read or write (made if missing): refused at once when it, or an ancestor, is a file."""
    found = _first_existing(path.absolute())
    if not found.is_dir():
        raise UsageError(f"{what} {path}: {'it' if found == path.absolute() else found} is a file, not a folder")
    return path


def check_file(path: Path, what: str, *, parent_must_exist: bool = False) -> Path:
    """A file to write: refused at once when it is a folder, or its folder is a file (or missing, if asked)."""
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a folder; name a file")
    parent = path.absolute().parent
    if parent_must_exist and not parent.is_dir():
        state = "is a file" if parent.exists() else "does not exist"
        raise UsageError(f"{what} {path}: its folder {path.parent} {state}")
    check_folder(path.parent, what)
    _can_create_in(_first_existing(parent), what, path)
    return path


def _can_create_in(folder: Path, what: str, path: Path) -> None:
    """Try it (permissions, read-only mounts, /proc): a later failure would come after other files were written."""
    import tempfile  # here, not at the top: it loads random and hashlib, which --help does not need

    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".deploystack-probe-")
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise UsageError(f"{what} {path}: cannot create files in {folder} ({reason})") from None
    os.close(handle)
    os.unlink(probe)
