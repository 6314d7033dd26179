"""`deploystack db ...`: status of the primary and its replicas, backups, restore, the upgrade to Patroni."""

import sys
import time as _time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deploystack import console
from deploystack.cli.media import human
from deploystack.cli.options import JsonOpt, OutOpt, SpecOpt, check_folder
from deploystack.errors import UsageError
from deploystack.target import Target

if TYPE_CHECKING:
    from deploystack.engine.patroni import ClusterStatus

db_app = typer.Typer(help="The database (DBC): replication status, backups, restore.", no_args_is_help=True)


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _lag_bytes(value: int | None) -> str:
    return "-" if value is None else human(value)


def _lag_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@db_app.command()
def status(
    file: SpecOpt = None,
    output: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each node's role, state, LSN, replication lag (bytes, seconds) and replication slot."""
    from deploystack.operations import Session, backups, db

    session = Session(Target.of(file, output))  # one spec, one engine client for the three looks
    cluster = db.db_cluster(session)
    if cluster is not None:  # dbc.ha: patroni
        archive = backups.db_archiver(session)
        if as_json:
            console.as_json(cluster.as_dict() | ({"archive": archive} if archive is not None else {}))
            return
        _cluster_table(cluster, as_json)
        if archive is not None:
            _archive_lines(archive)
        return
    result = db.db_status(session)
    if as_json:
        console.as_json(result.as_dict())
        return
    console.table(
        f"database of project {result.project}",
        ["node", "state", "role", "lsn", "lag", "lag (s)", "replication", "slot"],
        [(n.service, n.state, n.role or f"? ({n.error})", _or_dash(n.lsn),
          _lag_bytes(n.lag_bytes), _lag_seconds(n.lag_seconds), _or_dash(n.replication),
          _or_dash(n.slot) + (f" ({n.slot_health})" if n.slot_health else ""))
         for n in result.nodes],
    )
    if result.slots:
        console.table("replication slots (on the primary)",
                      ["slot", "type", "active", "health", "restart lsn", "wal status", "retained WAL"],
                      [(s.name, s.type, "yes" if s.active else "no", s.health, _or_dash(s.restart_lsn),
                        _or_dash(s.wal_status), _lag_bytes(s.retained_bytes)) for s in result.slots])
    console.say("PostgreSQL 15, streaming replicas: `deploystack db upgrade` moves it to Patroni + PostgreSQL 17 "
                "(set dbc.ha: patroni first; docs/db.md)")


def _cluster_table(cluster: "ClusterStatus", as_json: bool) -> None:
    if as_json:
        console.as_json(cluster.as_dict())
        return
    console.table(
        f"database of project {cluster.project} (Patroni; leader: {cluster.leader or 'none'})",
        ["node", "state", "role", "patroni", "timeline", "lag", "address"],
        [(m.service, m.state, m.role or "?", _or_dash(m.patroni_state), _or_dash(m.timeline),
          _lag_bytes(m.lag_bytes), _or_dash(m.host)) for m in cluster.members],
    )
    if cluster.error:
        console.warning(cluster.error)
    node, slot = cluster.offsite, cluster.offsite_slot
    if node is not None:
        console.table(
            "offsite replica (as the leader sees it)",
            ["replica", "from", "replication", "lag", "slot", "wal status", "retained WAL"],
            [(node.service, node.container, _or_dash(node.replication), _lag_bytes(node.lag_bytes),
              _or_dash(node.slot_health), _or_dash(slot.wal_status if slot else None),
              _lag_bytes(slot.retained_bytes if slot else None))],
        )
        if slot is not None and slot.wal_status == "lost":
            console.warning(f"the slot {node.service} lost WAL the offsite replica needs: clone it again "
                            "(docs/db.md, An offsite replica)")


def _archive_lines(archive: dict[str, Any]) -> None:
    """dbc.backups: the leader's WAL archiver (pg_stat_archiver), loud when archive_command fails, and the
    backup service's health check when it fails (a failed or missed backup)."""
    if archive.get("scheduler_problem"):
        console.warning(f"BACKUPS: {archive['scheduler_problem']} (the backup service's health check; "
                        "see `deploystack db backups` and its logs)")
    if archive.get("error"):
        console.warning(f"WAL archive: not read ({archive['error']})")
        return
    held = f"{archive['pending_segments']} segments ({human(archive['pending_bytes'])}) waiting in pg_wal"
    console.say(f"WAL archive: {archive['archived_count']} archived, last {archive['last_archived_wal'] or '-'} "
                f"at {archive['last_archived_time'] or '-'}; {held}")
    if archive["failing"]:
        console.warning(f"WAL ARCHIVING FAILS: {archive['failed_count']} failures, last {archive['last_failed_wal']} "
                        f"at {archive['last_failed_time']}; {held} (the disk fills until it works: see "
                        "`deploystack db backups` and the backup service's logs)")


AppOpt = Annotated[str | None, typer.Option(
    "--app", help="whose database (each app has its own); default: the spec's first app")]


@db_app.command()
def backup(
    folder: Annotated[Path, typer.Argument(help="where backups go (created if missing)")],
    file: SpecOpt = None,
    output: OutOpt = None,
    keep: Annotated[int, typer.Option(help="how many backups of this kind and project to keep in FOLDER")] = 7,
    physical: Annotated[bool, typer.Option(
        "--physical", help="a pg_basebackup tarball of the whole cluster (disaster recovery), not pg_dump",
    )] = False,
    app: AppOpt = None,
) -> None:
    """Back up an app's database (pg_dump custom format) into FOLDER; older ones beyond --keep go."""
    from deploystack.operations import Session, db

    check_folder(folder, "backup folder")
    path = db.db_backup(Session(Target.of(file, output), console.Progress()), folder, keep, physical, app)
    console.say(f"backed up to {path}")


@db_app.command()
def restore(
    path: Annotated[Path | None, typer.Argument(
        help="a dump made by `db backup`, or a folder (its newest dump); not with --time/--latest/--backup",
        show_default=False)] = None,
    file: SpecOpt = None,
    output: OutOpt = None,
    app: AppOpt = None,
    time: Annotated[str | None, typer.Option(
        "--time", help="dbc.backups: the whole database as it was then, 'YYYY-MM-DD HH:MM:SS[+TZ]' (UTC "
                       "when no zone)", show_default=False)] = None,
    latest: Annotated[bool, typer.Option(
        "--latest", help="dbc.backups: the whole database up to the last archived transaction")] = False,
    backup_id: Annotated[str | None, typer.Option(
        "--backup", help="dbc.backups: the whole database as of the end of this backup (a label of "
                         "`db backups`)", show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation (--time/--latest/--backup)")] = False,
    into: Annotated[Path | None, typer.Option(
        "--into", help="with --time/--latest/--backup: restore into the stack of this other spec (brought up "
                       "first; ha: patroni, no dbc.backups yet), leaving this one as it is", show_default=False,
    )] = None,
) -> None:
    """Restore a dump into an app's database on the primary (backed up beside it first); replicas follow.
    With dbc.backups: --time, --latest or --backup restore the whole database from the pgBackRest repository."""
    from deploystack.operations import Session, backups, db

    chosen = [(kind, value) for kind, value, given in (("time", time or "", time is not None),
                                                       ("latest", "", latest),
                                                       ("backup", backup_id or "", backup_id is not None)) if given]
    if not chosen:
        if into is not None:
            raise UsageError("--into needs one of --time, --latest, --backup")
        if path is None:
            raise UsageError("db restore needs a dump file or folder, or one of --time, --latest, --backup")
        dump = db.db_restore(Session(Target.of(file, output), console.Progress()), path, app)
        console.say(f"restored from {dump}")
        return
    if len(chosen) > 1 or path is not None or app is not None:
        raise UsageError("give one of --time, --latest, --backup, without a dump path or --app (the whole "
                         "database is restored)")
    kind, value = chosen[0]
    whose = f"the database of {into}'s stack" if into is not None else "the whole database"
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"db restore replaces {whose}: add --yes to confirm")
        typer.confirm(f"Replace {whose} with this one's state {'at ' + value if kind == 'time' else kind} "
                      "(the apps stop meanwhile)?", abort=True)
    started = _time.monotonic()
    report = console.Progress()  # one for both sessions
    backups.db_pitr_restore(Session(Target.of(file, output), report), kind, value,
                            Session(Target.of(into, None), report) if into is not None else None)
    console.say(f"restored ({kind}{' ' + value if value else ''}){' into ' + str(into) if into else ''} in "
                f"{_time.monotonic() - started:.1f}s")


@db_app.command()
def backups(
    file: SpecOpt = None,
    output: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """dbc.backups: the backups in the pgBackRest repository, the recoverable window, where the repository is."""
    from deploystack.operations import Session
    from deploystack.operations.backups import db_backups

    result = db_backups(Session(Target.of(file, output)))
    if as_json:
        console.as_json(result.as_dict())
        return
    console.table(
        f"backups of project {result.project}: {result.repository}",
        ["backup", "type", "start (UTC)", "stop (UTC)", "duration", "database", "in repository", "record"],
        [(b.label, b.type, f"{b.start:%Y-%m-%d %H:%M:%S}", f"{b.stop:%Y-%m-%d %H:%M:%S}",
          f"{(b.stop - b.start).total_seconds():.0f}s", human(b.size), human(b.repo_size),
          "yes" if b.recorded else "no") for b in result.backups],
    )
    window = result.window
    console.say("recoverable: " + (f"from {window[0]:%Y-%m-%d %H:%M:%S} to {window[1]:%Y-%m-%d %H:%M:%S} UTC"
                                   if window else "nothing yet (no backup)"))
    if result.archiver is not None:
        a = result.archiver
        console.say(f"WAL archived: {a.archived_count} segments, last {a.last_archived_wal or '-'} at "
                    f"{a.last_archived_time or '-'}; waiting: {a.pending_segments} ({human(a.pending_bytes)})")
    state = result.scheduler
    if state.get("last_label"):
        console.say(f"scheduler: last backup {state['last_label']} {state.get('last_result', '')}")
    for problem in result.problems:
        console.warning(problem)


@db_app.command()
def verify(
    file: SpecOpt = None,
    output: OutOpt = None,
    backup_id: Annotated[str | None, typer.Option(
        "--backup", help="the backup to check (default: the newest)", show_default=False)] = None,
) -> None:
    """dbc.backups: restore a backup into a throwaway container, run pg_amcheck, compare each table's rows with
    the backup's record; exit 0 only when it holds."""
    from deploystack.operations import Session, backups

    started = _time.monotonic()
    ok, out = backups.db_verify(Session(Target.of(file, output), console.Progress()), backup_id)
    summary = [line for line in out.splitlines() if "tables," in line or "verified" in line]
    for line in summary:
        console.say(line)
    if not ok:
        errors = [line.strip() for line in out.splitlines() if "ERROR" in line or "backup-verify:" in line]
        console.warning(f"verification failed after {_time.monotonic() - started:.1f}s:\n"
                        + "\n".join(errors[-3:] or out.strip().splitlines()[-3:] or ["no output"]))
        raise typer.Exit(1)
    console.say(f"verified in {_time.monotonic() - started:.1f}s")


@db_app.command()
def promote(
    replica: Annotated[str, typer.Argument(help="the replica to promote, e.g. db-replica-1")],
    file: SpecOpt = None,
    output: OutOpt = None,
    force: Annotated[bool, typer.Option(help="stop a primary that still runs, and promote anyway")] = False,
) -> None:
    """Promote a replica when the primary is lost: it becomes db-primary (apps reconnect), replicas re-clone."""
    from deploystack.operations import Session, db

    kept = db.db_promote(Session(Target.of(file, output), console.Progress()), replica, force)
    console.say(f"{replica} promoted: it is db-primary now; the old primary's data is kept in volume {kept}")


@db_app.command()
def switchover(
    to: Annotated[str | None, typer.Option(
        "--to", help="the node to lead, e.g. db-node-2 (default: Patroni's pick)")] = None,
    file: SpecOpt = None,
    output: OutOpt = None,
) -> None:
    """Move the leader to another node (dbc.ha: patroni): the leader hands over, no acknowledged write is lost."""
    from deploystack.operations import Session, db

    leader = db.db_switchover(Session(Target.of(file, output), console.Progress()), to)
    console.say(f"{leader} leads now")


@db_app.command()
def upgrade(
    file: SpecOpt = None,
    output: OutOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do it without asking")] = False,
) -> None:
    """Move a PostgreSQL 15 stack to Patroni + PostgreSQL 17 (set dbc.ha: patroni first), rows checked."""
    from deploystack.operations import Session, upgrade

    session = Session(Target.of(file, output), console.Progress())  # the spec parsed once for both
    steps = upgrade.db_upgrade_steps(session)
    console.say("db upgrade will:\n" + "\n".join(f"  {n}. {step}" for n, step in enumerate(steps, 1)))
    console.say("The apps are down from step 1 until step 6. A failure before step 6 rolls back: the old stack "
                "runs again as it was.")
    if not yes and not typer.confirm("Upgrade now?", default=False):
        raise typer.Exit(1)
    result = upgrade.db_upgrade(session)
    console.say(f"upgraded to Patroni + PostgreSQL 17 in {result.seconds:.1f}s: {result.rows} rows in "
                f"{result.tables} tables of {len(result.databases)} databases, the same before and after")
    console.say(result.note)


@db_app.command()
def shell(
    arguments: Annotated[list[str] | None, typer.Argument(
        help="for psql, after -- (e.g. -- -c 'select 1')", show_default=False)] = None,
    file: SpecOpt = None,
    output: OutOpt = None,
    app: AppOpt = None,
) -> None:
    """psql on the primary, as an app's database role on its database."""
    from deploystack.operations import Session, db

    raise typer.Exit(db.db_shell(Session(Target.of(file, output)), arguments or [], app))
