"""`deploystack media ...`: the media store's usage, tarball backups and restores, and (dbc.backups.media)
the scheduled snapshots in the backups' store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deploystack.errors import UsageError
from deploystack.operations.session import Session
from deploystack.spec import Stack

if TYPE_CHECKING:
    from deploystack.mediasnapshots import Snapshot, SnapshotsReport


def media_usage(session: Session) -> int:
    from deploystack.engine import media

    return media.usage_bytes(session.client, session.stack.project)


def media_backup(session: Session, folder: Path, keep: int) -> Path:
    from deploystack.engine import media

    if keep < 1:
        raise UsageError("--keep must be at least 1")
    docker_client = session.connect()
    with session.lock():
        return media.backup(docker_client, session.stack.project, folder, keep, session.report)


def media_restore(session: Session, path: Path) -> Path:
    """Restore `path` (a backup, or a folder: its newest backup of this project); what the store held
    before is backed up next to it first, so a restore loses nothing."""
    from deploystack.engine import media
    from deploystack.plan import build_plan

    stack = session.stack
    if not stack.mmc.enabled or stack.mmc.backend != "seaweedfs":
        raise UsageError("media restore works on the SeaweedFS media store (mmc.backend: seaweedfs)")
    session.require_generated()
    archive = path
    if path.is_dir():
        found = sorted(path.glob(f"{media.backup_prefix(stack.project)}*.tar.gz"))
        if not found:
            raise UsageError(f"no media backup of project {stack.project} in {path}")
        archive = found[-1]
    if not archive.is_file():
        raise UsageError(f"{archive}: no such backup file")
    archive = archive.resolve()
    docker_client = session.connect()
    with session.lock():
        media.backup(docker_client, stack.project, archive.parent, keep=10**6, report=session.report,
                     suffix="-before-restore")
        media.restore(docker_client, stack.project, archive, build_plan(stack).service("media"), session.report)
    return archive


def _media_backups_stack(session: Session, command: str) -> Stack:
    from deploystack.plan.mediabackups import enabled

    return session.stack_with(enabled, f"media {command} needs dbc.backups.media (with dbc.ha: patroni)",
                              "`media backup DIR` / `media restore ARCHIVE` make and restore tarballs on any stack")


def media_snapshots(session: Session) -> SnapshotsReport:
    """dbc.backups.media: the snapshots in the store (read from it), where it is, the scheduler's state."""
    from deploystack.engine import mediabackups
    from deploystack.mediasnapshots import SnapshotsReport
    from deploystack.plan.mediabackups import store_path

    stack = _media_backups_stack(session, "backups")
    found, state = mediabackups.snapshots(session.client, stack.project)
    backups = stack.dbc.backups
    assert backups is not None
    off_host = backups.target is not None
    where = (f"s3://{store_path(stack)} at {backups.target.endpoint} (off-host)" if backups.target is not None
             else f"s3://{store_path(stack)} on the stack's own media store (same host, not a disaster copy)")
    result = SnapshotsReport(stack.project, where, off_host, found, state)
    if state.get("last_result") == "failed":
        result.problems.append(f"the last scheduled media snapshot failed: {state.get('last_error', '')}")
    if state.get("last_result") == "skipped":
        result.problems.append("the last scheduled media snapshot was skipped: the media buckets are empty and "
                               "the newest snapshot is not (`media restore --latest` brings it back)")
    return result


def media_snapshot_restore(session: Session, moment: str | None, obj: str | None) -> Snapshot:
    """Restore the media buckets from the newest snapshot at or before `moment` (None: the newest), whole
    or one object `obj` (BUCKET/KEY)."""
    from deploystack.backupinfo import restore_moment
    from deploystack.engine import mediabackups
    from deploystack.mediasnapshots import check_object, pick

    at = restore_moment(moment) if moment is not None else None
    obj = check_object(obj) if obj is not None else None
    stack = _media_backups_stack(session, "restore --time/--latest")
    if obj is not None and obj.partition("/")[0] not in stack.mmc.buckets:
        raise UsageError(f"--object {obj}: bucket {obj.partition('/')[0]!r} is not in mmc.buckets")
    session.require_generated()
    docker_client = session.connect()
    with session.lock():
        found, _ = mediabackups.snapshots(docker_client, stack.project)
        snapshot = pick(found, at)
        mediabackups.restore(docker_client, stack.project, snapshot, obj, session.report)
    return snapshot
