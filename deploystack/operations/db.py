"""`deploystack db ...` on the stack's PostgreSQL: status, pg_dump backups and restores, promote, Patroni's
view and switchover, psql (pgBackRest's commands: operations/backups.py; the upgrade: operations/upgrade.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from deploystack.errors import UsageError
from deploystack.operations.session import Session
from deploystack.plan.project import subset
from deploystack.spec import Stack

if TYPE_CHECKING:
    from deploystack.engine.db import Status as DbStatus
    from deploystack.engine.patroni import ClusterStatus
    from deploystack.plan.model import AppDatabase


def app_database(stack: Stack, app: str | None) -> AppDatabase:
    """App `app`'s database role and database (default: the spec's first app's); UsageError if no such app."""
    from deploystack.plan.tenancy import app_databases

    databases = {d.app: d for d in app_databases(stack)}
    if app is not None and app not in databases:
        raise UsageError(f"--app {app}: no such app in {stack.project} (apps: {', '.join(databases)})")
    return databases[app] if app is not None else next(iter(databases.values()))


def db_status(session: Session) -> DbStatus:
    """Each database node's role, LSN, replication lag and slot, from the nodes themselves."""
    from deploystack.engine import db
    from deploystack.plan.dbc import PRIMARY, offsite_role, replica_names

    stack = session.stack
    offsite = offsite_role(stack.dbc.offsite) if stack.dbc.offsite else None
    return db.status(session.client, stack.project, [PRIMARY, *replica_names(stack)], offsite)


def db_backup(session: Session, folder: Path, keep: int, physical: bool, app: str | None = None) -> Path:
    """pg_dump (custom format) of an app's database, or with `physical` a pg_basebackup tarball of the
    whole cluster, into `folder`; then only the `keep` newest of that kind stay."""
    from deploystack.engine import db

    if keep < 1:
        raise UsageError("--keep must be at least 1")
    stack = session.stack
    docker_client = session.client
    with session.lock():
        database = app_database(stack, app).database
        return db.backup(docker_client, stack.project, database, folder, keep, session.report, physical)


def db_restore(session: Session, path: Path, app: str | None = None) -> Path:
    """Restore a pg_dump custom-format backup (or a folder's newest one of this project) into an app's
    database on the primary; the database is backed up next to it first, so a restore loses nothing."""
    from deploystack.engine import db

    stack = session.stack
    database = app_database(stack, app)
    session.require_generated()
    dump = path
    if path.is_dir():
        found = db.backups_of((p.name for p in path.iterdir()), stack.project, physical=False)
        if not found:
            raise UsageError(f"no database dump of project {stack.project} in {path}")
        dump = path / found[-1]
    if not dump.is_file():
        raise UsageError(f"{dump}: no such backup file")
    dump = dump.resolve()
    db.check_dump(dump)
    docker_client = session.client
    with session.lock():
        db.backup(docker_client, stack.project, database.database, dump.parent, keep=10**6, report=session.report,
                  suffix="-before-restore")
        db.restore(docker_client, stack.project, database.database, database.owner, dump, session.report)
    return dump


def db_promote(session: Session, replica: str, force: bool) -> str:
    """Promote `replica` when the primary is lost: its data becomes db-primary's, every replica re-clones,
    and the database services are brought back up (names unchanged, so apps just reconnect). Returns the
    volume that keeps the old primary's data."""
    from deploystack.engine import failover
    from deploystack.plan.dbc import PRIMARY, replica_names

    if session.stack.dbc.ha == "patroni":
        raise UsageError("dbc.ha is patroni: Patroni promotes a standby by itself when the leader is lost; "
                         "`deploystack db switchover --to NODE` moves the leader by hand")
    session.require_generated()
    docker_client = session.connect()
    with session.lock():
        rendered = session.generated(session.report)
        replicas = replica_names(session.stack)
        kept = failover.promote(docker_client, rendered.plan.project, replica, replicas, force, session.report)
        database = dataclasses.replace(rendered, plan=subset(rendered.plan, [PRIMARY, *replicas]))
        session.converge(database, partial=True)
    return kept


def db_cluster(session: Session) -> ClusterStatus | None:
    """Patroni's view of the nodes (leader, lag, timeline) when dbc.ha is patroni; else (also while the data
    still waits for `db upgrade` on PostgreSQL 15) None."""
    from deploystack.engine import patroni, upgrade
    from deploystack.plan.dbc import offsite_role
    from deploystack.plan.patroni import enabled, node_names

    stack = session.stack
    docker_client = session.client
    if not enabled(stack) or upgrade.pending(docker_client, stack.project):
        return None
    offsite = offsite_role(stack.dbc.offsite) if stack.dbc.offsite is not None else None
    return patroni.status(docker_client, stack.project, node_names(stack), offsite)


def db_switchover(session: Session, to: str | None) -> str:
    """Patroni's switchover to `to` (or the standby Patroni picks); returns the new leader."""
    from deploystack.engine import patroni
    from deploystack.plan.patroni import enabled, node_names

    stack = session.stack
    if not enabled(stack):
        raise UsageError("db switchover needs dbc.ha: patroni (streaming replicas: `db promote` when the "
                         "primary is lost)")
    with session.lock():
        return patroni.change_leader(session.client, stack.project, node_names(stack), to, False, session.report)


def db_shell(session: Session, arguments: list[str], app: str | None = None) -> int:
    """psql on the primary (on Patroni, the leader), as an app's database role on its database; `arguments`
    go to psql."""
    from deploystack import labels
    from deploystack.engine.provision import database_leader
    from deploystack.operations.oneoff import exec_in

    stack = session.stack
    database = app_database(stack, app)
    # postgres over the local socket (no password), with the app's role and rights from the start.
    psql = ["env", f"PGOPTIONS=-c role={database.role}", "psql", "-h", "/run/postgresql",
            "-U", "postgres", "-d", database.database, *arguments]
    leader = database_leader(session.client, stack.project)
    return exec_in(session, leader.labels[labels.SERVICE], int(leader.labels.get(labels.NUMBER, "1")), psql)
