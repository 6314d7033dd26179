"""`deploystack media ...`: usage, backup and restore of the S3 media store."""

import datetime as _dt
import sys
import time as _time
from pathlib import Path
from typing import Annotated

import typer

from deploystack import console
from deploystack.cli.options import JsonOpt, OutOpt, SpecOpt, check_folder
from deploystack.errors import UsageError
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
    from deploystack.operations import Session, media

    used = media.media_usage(Session(Target.of(file, output)))
    console.say(f"media: {human(used)} ({used} bytes)")


@media_app.command()
def backup(
    folder: Annotated[Path, typer.Argument(help="where backups go (created if missing)")],
    file: SpecOpt = None,
    output: OutOpt = None,
    keep: Annotated[int, typer.Option(help="how many backups of this project to keep in FOLDER")] = 7,
) -> None:
    """Back up the media volume into FOLDER as a tarball; older ones beyond --keep are removed."""
    from deploystack.operations import Session, media

    check_folder(folder, "backup folder")
    path = media.media_backup(Session(Target.of(file, output), console.Progress()), folder, keep)
    console.say(f"backed up to {path}")


@media_app.command()
def restore(
    path: Annotated[Path | None, typer.Argument(
        help="a backup file made by `media backup`, or a folder (its newest backup); not with --time/--latest",
        show_default=False)] = None,
    file: SpecOpt = None,
    output: OutOpt = None,
    time: Annotated[str | None, typer.Option(
        "--time", help="dbc.backups.media: the newest snapshot ended at or before 'YYYY-MM-DD HH:MM:SS[+TZ]' "
                       "(UTC when no zone)", show_default=False)] = None,
    latest: Annotated[bool, typer.Option("--latest", help="dbc.backups.media: the newest snapshot")] = False,
    obj: Annotated[str | None, typer.Option(
        "--object", help="with --time/--latest: only this object, BUCKET/KEY (default: every bucket)",
        show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation (--time/--latest)")] = False,
) -> None:
    """Replace the media store's data with a tarball backup (the current data is backed up beside it first);
    with dbc.backups.media, --time or --latest restore the buckets (or one --object) from a snapshot."""
    from deploystack.operations import Session, media

    if time is None and not latest:
        if path is None or obj is not None:
            raise UsageError("media restore needs a backup file or folder, or --time/--latest "
                             "(--object only with them)")
        archive = media.media_restore(Session(Target.of(file, output), console.Progress()), path)
        console.say(f"restored from {archive}")
        return
    if path is not None or (time is not None and latest):
        raise UsageError("give one of --time, --latest, without a backup path")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("media restore replaces the media objects: add --yes to confirm")
        what = f"the object {obj}" if obj else "every media bucket (objects the snapshot lacks are deleted)"
        typer.confirm(f"Replace {what} with the snapshot {'ended by ' + time if time else 'latest'}?",
                      abort=True)
    started = _time.monotonic()
    snapshot = media.media_snapshot_restore(Session(Target.of(file, output), console.Progress()), time, obj)
    console.say(f"restored {obj or 'every bucket'} from media snapshot {snapshot.name} "
                f"({snapshot.time:%Y-%m-%d %H:%M:%S} UTC) in {_time.monotonic() - started:.1f}s")


@media_app.command()
def backups(
    file: SpecOpt = None,
    output: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """dbc.backups.media: the media snapshots in the backups' store (time, objects, bytes), where it is."""
    from deploystack.operations import Session, media

    result = media.media_snapshots(Session(Target.of(file, output)))
    if as_json:
        console.as_json(result.as_dict())
        return
    console.table(
        f"media snapshots of project {result.project}: {result.store}",
        ["snapshot", "time (UTC)", "objects", "size", "took"],
        [(s.name, f"{s.time:%Y-%m-%d %H:%M:%S}", str(s.objects), human(s.bytes), f"{s.seconds}s")
         for s in result.snapshots],
    )
    state = result.scheduler
    if state.get("next_due", "").isdigit():
        due = _dt.datetime.fromtimestamp(int(state["next_due"]), _dt.UTC)
        console.say(f"next snapshot due at {due:%Y-%m-%d %H:%M:%S} UTC")
    for problem in result.problems:
        console.warning(problem)
