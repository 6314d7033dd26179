"""`deploystack media ...`: usage, backup and restore of the S3 media store."""

from pathlib import Path
from typing import Annotated

import typer

from deploystack import console
from deploystack.cli.options import OutOpt, SpecOpt, check_folder
from deploystack.target import Target

media_app = typer.Typer(help="The media store (MMC): usage, backups.", no_args_is_help=True)


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"


@media_app.command()
def usage(file: SpecOpt = None, output: OutOpt = None) -> None:
    """Disk used by the media store's volume."""
    from deploystack import operations

    used = operations.media_usage(Target.of(file, output))
    console.say(f"media: {human(used)} ({used} bytes)")


@media_app.command()
def backup(
    folder: Annotated[Path, typer.Argument(help="where backups go (created if missing)")],
    file: SpecOpt = None,
    output: OutOpt = None,
    keep: Annotated[int, typer.Option(help="how many backups of this project to keep in FOLDER")] = 7,
) -> None:
    """Back up the media volume into FOLDER as a tarball; older ones beyond --keep are removed."""
    from deploystack import operations

    check_folder(folder, "backup folder")
    path = operations.media_backup(Target.of(file, output), folder, keep, console.Progress())
    console.say(f"backed up to {path}")


@media_app.command()
def restore(
    path: Annotated[Path, typer.Argument(help="a backup file, or a folder (its newest backup)")],
    file: SpecOpt = None,
    output: OutOpt = None,
) -> None:
    """Replace the media store's data with a backup (the current data is backed up beside it first)."""
    from deploystack import operations

    archive = operations.media_restore(Target.of(file, output), path, console.Progress())
    console.say(f"restored from {archive}")
