"""The database's operations: status of the primary and its replicas, backups with retention, restore.

Everything runs through `docker exec` in the stack's own PostgreSQL containers, as `postgres` over the
local socket (trusted in pg_hba.conf), so no password crosses this process:

- status: `psql --csv` queries (pg_is_in_recovery, LSNs, pg_stat_replication, pg_replication_slots),
  parsed by deploystack/dbparse.py (pure, unit-tested without Docker);
- backup: `pg_dump -Fc` (or `pg_basebackup -Ft -z -X fetch -D -`, which reads the replication password
  from the primary's own environment) writes to stdout; the exec's stream is copied chunk by chunk to a
  hidden partial file next to the final name, then renamed, so memory stays flat and a half-written
  backup never looks like one;
- restore: the dump is streamed into the primary's /tmp as a one-file tar (`put_archive`), then
  `pg_restore --clean --if-exists --no-owner --role=<app user> --single-transaction` runs there.
  Replicas follow through streaming replication.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from deploystack import labels
from deploystack.atomicfile import atomic_writer
from deploystack.dbparse import Status as Status  # operations types db status through here
from deploystack.dbparse import (
    assemble,
    backup_name,
    parse_bool,
    parse_csv,
    parse_lsn,
    single_file_tar,
    timestamp,
    to_remove,
)
from deploystack.dbparse import backups_of as backups_of  # operations lists a project's dumps through here
from deploystack.engine.client import engine_errors
from deploystack.engine.report import Reporter
from deploystack.errors import DeployError, StackError, UsageError
from deploystack.plan.names import NODE_PREFIX, PRIMARY, REPLICA_PREFIX, replica_of_volume

PSQL = ["timeout", "20", "psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1",
        "-h", "/run/postgresql", "-U", "postgres", "-d", "postgres"]
STDERR_KEEP = 16_384  # bytes of a failing tool's stderr kept for the error message
DUMP_MAGIC = b"PGDMP"  # pg_dump's custom format starts so
CATCH_UP_S = 60.0

NODE_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn,
       pg_last_wal_receive_lsn() AS receive_lsn,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS replay_age_s,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver,
       (SELECT slot_name FROM pg_stat_wal_receiver) AS receiver_slot
"""
REPLICATION_SQL = """
SELECT application_name, client_addr, state, sync_state, replay_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) AS lag_bytes,
       extract(epoch FROM replay_lag) AS lag_s
  FROM pg_stat_replication ORDER BY application_name
"""
SLOTS_SQL = """
SELECT slot_name, slot_type, active, restart_lsn, wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) AS retained_bytes
  FROM pg_replication_slots ORDER BY slot_name
"""


# -- Docker: finding the nodes and running things in them ---------------------------------------------


def db_containers(client: docker.DockerClient, project: str) -> dict[str, Container]:
    with engine_errors("finding the database containers"):
        found = client.containers.list(all=True, filters={"label": f"{labels.PROJECT}={project}"})
    return {c.labels.get(labels.SERVICE, ""): c for c in found
            if c.labels.get(labels.SERVICE, "").startswith("db-") and c.labels.get(labels.ONEOFF) != "True"}


def container_state(container: Container) -> str:
    state = container.attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status")
    status = str(state.get("Status", container.status))
    return f"{status} ({health})" if health else status


def _exec(client: docker.DockerClient, container: Container, command: list[str],
          doing: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `command` in a running container."""
    with engine_errors(doing):
        code, (out, err) = container.exec_run(command, demux=True)
    return int(code), (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")


def psql(client: docker.DockerClient, container: Container, sql: str) -> tuple[str | None, str | None]:
    """(csv output, None) or (None, why it failed)."""
    try:
        code, out, err = _exec(client, container, [*PSQL, "-c", sql], f"querying {container.name}")
    except DeployError as exc:  # one node's failure must not hide the others
        return None, str(exc)
    if code != 0:
        lines = (err or out).strip().splitlines()
        return None, (lines[-1] if lines else f"psql exited with {code}")
    return out, None


def status(client: docker.DockerClient, project: str, services: Sequence[str], offsite: str | None = None) -> Status:
    """Each wanted node (and any other db-* container of the project), whatever state it is in; and the
    offsite replica `offsite` (its slot name) as the primary sees it."""
    containers = db_containers(client, project)
    names = list(services) + sorted(set(containers) - set(services))
    observed: list[tuple[str, str, str, dict[str, str | None] | None, str | None]] = []
    primary: Container | None = None
    for service in names:
        container = containers.get(service)
        if container is None:
            observed.append((service, "-", "missing", None, "no container (is the stack up?)"))
            continue
        state = container_state(container)
        if container.status != "running":
            observed.append((service, container.name or "", state, None, f"container {container.status}"))
            continue
        out, error = psql(client, container, NODE_SQL)
        rows = parse_csv(out) if out is not None else []
        row = rows[0] if rows else None
        observed.append((service, container.name or "", state, row, error))
        if row is not None and parse_bool(row["in_recovery"]) is False and (primary is None or service == PRIMARY):
            primary = container
    replication = slots = None
    if primary is not None:
        replication, _ = psql(client, primary, REPLICATION_SQL)
        slots, _ = psql(client, primary, SLOTS_SQL)
    return assemble(project, observed, replication, slots, offsite)


def primary_container(client: docker.DockerClient, project: str) -> Container:
    """The container that takes writes: db-primary, or on a Patroni DBC the leader Patroni reports."""
    # provision.py holds the one lookup of the leader; imported here, as it imports this module (via patroni).
    from deploystack.engine.provision import database_leader

    return database_leader(client, project)


# -- backups ----------------------------------------------------------------------------------------


def stream_to_file(client: docker.DockerClient, container: Container, command: list[str], path: Path,
                    doing: str) -> None:
    """Run `command` in `container`, its stdout going to `path` as it comes (binary, flat memory).

    The file appears under a hidden partial name first and is renamed once the command succeeded.
    """
    errors = bytearray()
    with atomic_writer(path, mode=0o600, durable=True) as handle:  # backups hold every row: owner only
        with engine_errors(doing):
            exec_id = client.api.exec_create(container.id, command, stdout=True, stderr=True)["Id"]
            for out, err in client.api.exec_start(exec_id, stream=True, demux=True):
                if out:
                    handle.write(out)
                if err:
                    errors.extend(err)
                    del errors[:-STDERR_KEEP]
            code = client.api.exec_inspect(exec_id)["ExitCode"]
        if code != 0:
            message = errors.decode(errors="replace").strip() or f"exit code {code}"
            raise StackError(f"{doing} failed in {container.name}:\n{message}")
        if handle.tell() == 0:
            raise StackError(f"{doing}: {container.name} wrote nothing")


def backup(client: docker.DockerClient, project: str, database: str, folder: Path, keep: int, report: Reporter,
           physical: bool = False, suffix: str = "") -> Path:
    """A backup of the primary into `folder`, then only the `keep` newest of this project and kind stay."""
    folder = folder.resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the backup folder {folder}: {exc.strerror}") from None
    container = primary_container(client, project)
    path = folder / backup_name(project, timestamp(), physical, suffix)
    if physical:
        # The replication user's password is read from the primary's own environment, inside it.
        command = ["bash", "-c", 'PGPASSWORD=$REPLICATION_PASSWORD exec pg_basebackup -h 127.0.0.1 -p 5432 '
                   '-U "$REPLICATION_USER" --no-password -D - -Ft -z -X fetch --checkpoint=fast']
        report.step(f"base backup of {container.name} (the whole cluster) to {path}")
    else:
        command = ["pg_dump", "-h", "/run/postgresql", "-U", "postgres", "-d", database, "-Fc"]
        report.step(f"dumping database {database} from {container.name} to {path}")
    stream_to_file(client, container, command, path, "pg_basebackup" if physical else "pg_dump")
    report.step(f"wrote {path.name} ({path.stat().st_size} bytes)")
    for old in to_remove((p.name for p in folder.iterdir()), project, physical, keep):
        report.step(f"removing old backup {old} (keeping {keep})")
        (folder / old).unlink()
    return path


# -- restore ----------------------------------------------------------------------------------------


def check_dump(path: Path) -> None:
    """A pg_dump custom-format file, or a UsageError that says what it is instead."""
    if path.name.endswith(".tar.gz") or path.name.endswith(".tgz"):
        raise UsageError(
            f"{path} is a physical (pg_basebackup) backup: `db restore` restores pg_dump dumps only. "
            "A physical backup replaces the whole cluster by hand: see docs/db.md, "
            "\"Restoring a physical backup\"")
    try:
        with path.open("rb") as handle:
            head = handle.read(len(DUMP_MAGIC))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if head != DUMP_MAGIC:
        raise UsageError(f"{path} is not a pg_dump custom-format dump (made by `deploystack db backup`)")


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def put_file(container: Container, path: Path, inside: str, report: Reporter) -> None:
    """Stream the host's file `path` into the container's /tmp as `inside` (a one-file tar, flat memory)."""
    size = path.stat().st_size
    report.step(f"copying {path.name} ({size} bytes) into {container.name}")
    with engine_errors(f"copying {path.name} into {container.name}"):
        if not container.put_archive("/tmp", single_file_tar(inside, size, _chunks(path), path.stat().st_mtime)):
            raise StackError(f"copying {path.name} into {container.name} failed")


def restore(client: docker.DockerClient, project: str, database: str, owner: str, dump: Path,
            report: Reporter) -> None:
    """pg_restore `dump` into `database` on the primary, in one transaction; then wait (bounded) for the
    replicas to replay it."""
    container = primary_container(client, project)
    inside = f"deploystack-restore-{timestamp()}.dump"
    put_file(container, dump, inside, report)
    try:
        report.step(f"restoring database {database} from {dump.name}")
        code, out, err = _exec(client, container, [
            "pg_restore", "-h", "/run/postgresql", "-U", "postgres", f"--role={owner}", "-d", database,
            "--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error", f"/tmp/{inside}",
        ], f"restoring into {container.name}")
        if code != 0:
            raise StackError(f"pg_restore failed in {container.name} (nothing was changed: it ran in one "
                             f"transaction):\n{(err or out).strip()[-STDERR_KEEP:]}")
    finally:
        _exec(client, container, ["rm", "-f", f"/tmp/{inside}"], f"cleaning up {container.name}")
    wait_for_replicas(client, project, container, report)


def standbys(services: Iterable[str], leader: str) -> list[str]:
    """The database services that replay the leader's WAL: `db-replica-*`, or on Patroni every `db-node-*`
    but the leader (never the router, which runs no PostgreSQL)."""
    return sorted(s for s in services if s.startswith((REPLICA_PREFIX, NODE_PREFIX)) and s != leader)


def wait_for_replicas(client: docker.DockerClient, project: str, primary: Container, report: Reporter,
                      timeout: float = CATCH_UP_S) -> None:
    """Report when each running replica has replayed up to the primary's current LSN (bounded wait)."""
    out, error = psql(client, primary, "SELECT pg_current_wal_lsn() AS lsn")
    rows = parse_csv(out or "")
    target = parse_lsn(rows[0]["lsn"]) if rows else None
    if target is None:
        report.step(f"could not read the primary's LSN ({error}); not waiting for replicas")
        return
    containers = db_containers(client, project)
    leader = primary.labels.get(labels.SERVICE, PRIMARY)
    replicas = [containers[s] for s in standbys(containers, leader) if containers[s].status == "running"]
    deadline = time.monotonic() + timeout
    for replica in replicas:
        while True:
            out, _ = psql(client, replica, "SELECT pg_last_wal_replay_lsn() AS lsn")
            rows = parse_csv(out or "")
            replayed = parse_lsn(rows[0]["lsn"]) if rows else None
            if replayed is not None and replayed >= target:
                report.step(f"{replica.name} has replayed the restore")
                break
            if time.monotonic() > deadline:
                report.step(f"{replica.name} has not replayed the restore yet after {timeout:.0f}s: "
                            "see `deploystack db status`")
                break
            time.sleep(0.5)


def drop_stale_slots(client: docker.DockerClient, project: str, wanted: Sequence[str], report: Reporter) -> None:
    """Drop the primary's inactive `replica_*` and `offsite_*` slots that no replica in the spec uses any more.

    A slot pins WAL on the primary until its replica reads it: one left behind by a removed replica
    would fill the disk. Replicas make their own slots; deploystack removes them (`up`, `scale dbc=N`,
    and the offsite replica's once `dbc.offsite` leaves the spec).
    """
    try:
        container = primary_container(client, project)
    except UsageError:
        return  # no primary running: nothing to clean, and nothing pinned
    drop_slots_except(client, container, wanted, report)


def _gone_slots(wanted: Sequence[str]) -> str:
    """The replica and offsite slots not in `wanted` (slot names: [a-z0-9_], from the plan)."""
    keep = ",".join(wanted)
    return ("slot_type = 'physical' AND (slot_name LIKE 'replica\\_%' OR slot_name LIKE 'offsite\\_%') "
            f"AND slot_name <> ALL (string_to_array('{keep}', ','))")


def drop_slots_sql(wanted: Sequence[str]) -> str:
    """Drops the inactive replica and offsite slots not in `wanted`; a row each."""
    return ("SELECT slot_name, pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE NOT active AND {_gone_slots(wanted)}")


def await_slots_released_sql(wanted: Sequence[str], seconds: int) -> str:
    """Waits (at most `seconds`) until no removed replica streams through its slot any more: run where the
    replicas' containers cannot be watched (a swarm's other nodes) before drop_slots_sql."""
    return (f"DO $$ BEGIN FOR i IN 1..{seconds * 2} LOOP EXIT WHEN NOT EXISTS (SELECT FROM pg_replication_slots "
            f"WHERE active AND {_gone_slots(wanted)}); PERFORM pg_sleep(0.5); END LOOP; END $$")


def drop_slots_except(client: docker.DockerClient, container: Container, wanted: Sequence[str],
                      report: Reporter) -> None:
    """In the primary `container`: drop the inactive replica and offsite slots not in `wanted`."""
    out, error = psql(client, container, drop_slots_sql(wanted))
    if error is not None:
        report.detail(f"could not drop stale replication slots: {error}")
        return
    for row in parse_csv(out or ""):
        report.step(f"dropped replication slot {row['slot_name']} (its replica is gone)")


def remove_stale_replica_volumes(client: docker.DockerClient, project: str, wanted: Sequence[str],
                                 report: Reporter, project_label: str = labels.PROJECT,
                                 prefix: str = REPLICA_PREFIX) -> None:
    """Remove the data volumes of replicas the spec no longer has (after `scale dbc=N` down).

    A replica's data is a copy of the primary's, so nothing is lost; a kept volume would come back
    stale at the next scale-up and could not catch up once the primary has recycled the WAL it needs.
    `project_label`: the label naming the volume's project (a swarm stack's differs from Compose's).
    `prefix`: the nodes' service names (`db-node-` for Patroni's, which Patroni re-clones the same way).
    """
    with engine_errors("removing old replica volumes"):
        for volume in client.volumes.list(filters={"label": f"{project_label}={project}"}):
            replica = replica_of_volume(project, volume.name or "", prefix)
            if replica is not None and replica not in wanted:
                try:
                    volume.remove()
                    report.step(f"removed volume {volume.name} (its replica is gone)")
                except docker.errors.APIError as exc:
                    report.detail(f"kept volume {volume.name}: {exc.explanation}")
