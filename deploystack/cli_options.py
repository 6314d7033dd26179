"""Options shared by the CLI's commands, so that `-f`, `-o` and the rest mean the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# The CDC container has it in its environment, so a deploy from inside finds the stack's output folder.
from deploystack.plan.cdc import OUTPUT_PATH as OUTPUT_ENV

SpecOpt = Annotated[Path | None, typer.Option("--file", "-f", help="the spec (default ./deploystack.yaml)")]
OutOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", envvar=OUTPUT_ENV, show_envvar=True,
    help="the stack's output folder, as given to generate/up (default: stack/ beside the spec)")]
# The same folder, for commands whose -o names what they write.
StackOutOpt = Annotated[Path | None, typer.Option(
    "--stack-output", envvar=OUTPUT_ENV, show_envvar=True,
    help="the stack's output folder, as given to generate/up (default: stack/ beside the spec)")]
CaOpt = Annotated[Path | None, typer.Option("--ca-bundle", help="CA bundle for pip in builds (default: the host's)")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="show build output")]
