"""pgBackRest's commands (dbc.backups on dbc.ha: patroni): `db backups`, `db restore --time/--latest/--backup`
(`--into` another spec's stack), `db verify`, and the archiver's state for `db status`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploystack.errors import UsageError
from deploystack.operations.session import Session
from deploystack.spec import Stack

if TYPE_CHECKING:
    from deploystack.backupinfo import BackupsReport


def _backups_stack(session: Session, command: str) -> Stack:
    from deploystack.plan.backups import enabled

    return session.stack_with(enabled, f"db {command} needs dbc.backups (with dbc.ha: patroni)",
                              "`db backup DIR` / `db restore DIR` make and restore pg_dump files on any stack")


def backup_repository(stack: Stack) -> tuple[str, bool]:
    """Where the repository is, said plainly, and whether it is off this host."""
    from deploystack.plan.backups import local_store
    from deploystack.spec.models import BACKUP_BUCKET

    backups = stack.dbc.backups
    assert backups is not None
    if local_store(stack) or backups.target is None:
        return (f"s3://{BACKUP_BUCKET}/{stack.project} on the stack's own media store "
                "(same host, not a disaster copy)"), False
    return f"s3://{backups.target.bucket}/{stack.project} at {backups.target.endpoint} (off-host)", True


def db_archiver(session: Session) -> dict[str, object] | None:
    """dbc.backups: the leader's pg_stat_archiver as data for `db status`, with what the backup service's
    health check says when it fails (`scheduler_problem`); None without dbc.backups."""
    from deploystack.engine import backups
    from deploystack.plan.backups import enabled

    stack = session.stack
    if not enabled(stack):
        return None
    found, error = backups.archiver(session.client, stack.project)
    health: dict[str, object] = {"scheduler_problem": backups.scheduler_health(session.client, stack.project)}
    if found is None:
        return {"error": error} | health
    return found.as_dict() | health


def db_backups(session: Session) -> BackupsReport:
    """The repository's backups, the recoverable window, the archiver's and the scheduler's state."""
    from deploystack.engine import backups

    stack = _backups_stack(session, "backups")
    repository, off_host = backup_repository(stack)
    return backups.report(session.client, stack.project, repository, off_host)


def db_pitr_restore(session: Session, kind: str, value: str, into: Session | None = None) -> None:
    """Restore the running stack's database from the repository: `kind` time (value: a timestamp, UTC when
    it names no zone), latest, or backup (value: a label). `into`: instead into the stack of another spec,
    brought up first; this one is left as it is."""
    from deploystack.backupinfo import restore_time
    from deploystack.engine import backups
    from deploystack.operations.stack import up
    from deploystack.plan.patroni import node_names

    stack = _backups_stack(session, "restore --time/--latest/--backup")
    value = restore_time(value) if kind == "time" else value
    other = _restore_destination(stack, into) if into is not None else None
    session.require_generated()
    where = backup_repository(stack)[0]
    if into is None or other is None:
        with session.lock():
            backups.restore(session.client, session.rendered, node_names(stack), kind, value, session.report, where)
        return
    backups.check_restorable(session.client, stack.project, where, kind, value)  # before the other is made
    up(into)
    with session.lock(), into.lock():
        backups.restore(session.client, session.render(), node_names(other), kind, value, session.report,
                        where, into=into.render())


def _restore_destination(stack: Stack, into: Session) -> Stack:
    """The stack `db restore --into` makes: another project, Patroni, no repository of its own yet."""
    other = into.stack
    if other.project == stack.project:
        raise UsageError(f"--into {into.spec}: project {other.project} is this stack's own; restore into it "
                         "without --into, or give the other spec another project name")
    if other.dbc.ha != "patroni":
        raise UsageError(f"--into {into.spec}: dbc.ha must be patroni (PostgreSQL 17, as the backups)")
    if other.dbc.backups is not None:
        raise UsageError(f"--into {into.spec}: remove dbc.backups from it for the restore, add it afterwards "
                         "(its repository's stanza would be its empty database's: archiving the restored one fails)")
    return other


def db_verify(session: Session, label: str | None) -> tuple[bool, str]:
    """Restore a backup (default: the newest) into a throwaway container and check it."""
    from deploystack.engine import backups
    from deploystack.plan.patroni import node_names

    stack = _backups_stack(session, "verify")
    session.require_generated()
    return backups.verify(session.client, session.rendered, node_names(stack), label, session.report)
