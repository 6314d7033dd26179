"""Media snapshots (dbc.backups.media, plan/mediabackups.py) through the backup service, which alone holds
the keys of the snapshots' store: list them from the store (not from local state: a fresh stack sees the
snapshots of the one it replaces) and restore one, whole or one object (compose/backup/media-backup)."""

from __future__ import annotations

import re

import docker

from deploystack.backupinfo import parse_state
from deploystack.engine.backups import backup_service
from deploystack.engine.client import engine_errors
from deploystack.engine.report import Reporter
from deploystack.errors import StackError, UsageError
from deploystack.mediasnapshots import Snapshot, parse_snapshots
from deploystack.plan.mediabackups import STATE

LOG_PREFIX = re.compile(r"^\S+ media-backup: (error: )?")  # compose/_sourced/lib.sh log()

def _run(client: docker.DockerClient, project: str, command: list[str], doing: str) -> tuple[int, str, str]:
    container = backup_service(client, project)
    with engine_errors(doing):
        code, (out, err) = container.exec_run(command, user="postgres", demux=True)
    return int(code), (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")


def snapshots(client: docker.DockerClient, project: str) -> tuple[list[Snapshot], dict[str, str]]:
    """The snapshots in the store, oldest first, and the media scheduler's state."""
    code, out, err = _run(client, project, ["media-backup", "list"], "listing the media snapshots")
    if code != 0:
        lines = (err or out).strip().splitlines()
        raise StackError(f"listing the media snapshots failed: {LOG_PREFIX.sub('', lines[-1]) if lines else code}")
    _, state, _ = _run(client, project, ["cat", STATE], "reading the media scheduler's state")
    return parse_snapshots(out), parse_state(state)


def restore(client: docker.DockerClient, project: str, snapshot: Snapshot, obj: str | None,
            report: Reporter) -> None:
    """Make the media buckets what `snapshot` holds (objects it lacks are deleted), or restore one object."""
    what = f"{obj} from" if obj else "every bucket from"
    report.step(f"restoring {what} media snapshot {snapshot.name} ({snapshot.time:%Y-%m-%d %H:%M:%S} UTC)")
    code, out, err = _run(client, project, ["media-backup", "restore", snapshot.name, *([obj] if obj else [])],
                          "restoring media")
    for line in (out + err).splitlines():
        report.detail(line)
    if code != 0:
        lines = (err or out).strip().splitlines()
        last = LOG_PREFIX.sub("", lines[-1]) if lines else "no output"
        if code == 2:  # media-backup refused: no such snapshot, object or bucket; nothing was changed
            raise UsageError(last)
        raise StackError(f"the media restore failed: {last}")
