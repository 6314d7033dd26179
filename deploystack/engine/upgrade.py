"""`deploystack db upgrade`: a running PostgreSQL 15 stack moved to Patroni and PostgreSQL 17, by dump and
restore, rows counted per table before and after.

Everything runs by `docker exec` as postgres over the containers' own sockets (no password crosses this
process or a command line); the dumps stream to files on the host (mode 0600, in a 0700 folder). Until
the apps start on the new cluster, any failure rolls back: the new cluster's containers and volumes go,
the old output is written again and the old stack converged, so it runs as before. The old volumes are
never touched.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from deploystack import labels
from deploystack.dbparse import parse_csv
from deploystack.engine import patroni
from deploystack.engine.client import engine_errors
from deploystack.engine.db import put_file, stream_to_file, wait_for_replicas
from deploystack.engine.lookup import (
    project_containers,
    project_volumes,
    remove_service_containers,
    service_container,
)
from deploystack.engine.report import Reporter
from deploystack.errors import DeployError, StackError, UsageError
from deploystack.plan import upgrade as plan
from deploystack.plan.names import DB_ROUTER, NODE_PREFIX, PRIMARY, REPLICA_PREFIX, Role, volume_name
from deploystack.plan.project import subset
from deploystack.render.project import Rendered

WRITER_ROLES = (Role.APC, Role.APC_WORKER, Role.CDC_RUNNER)  # what writes to the database (deploys migrate)
SOCKET = ["-h", "/run/postgresql", "-U", "postgres"]
PSQL = ["timeout", "3600", "psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", *SOCKET]
DATABASES_SQL = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"
# Every ordinary table's exact row count, in one query (query_to_xml runs the count for each table).
COUNT_SQL = r"""
SELECT format('%I.%I', n.nspname, c.relname) AS tbl,
       (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                                             false, true, '')))[1]::text AS n
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
 ORDER BY 1
"""

Converge = Callable[[Rendered, bool], object]  # (rendered, partial): build, converge, provision
Write = Callable[[Rendered], None]  # write a rendered project to its output


@dataclass(frozen=True)
class Result:
    tables: int
    rows: int
    databases: list[str]
    seconds: float
    folder: Path
    note: str


def pending(client: docker.DockerClient, project: str) -> bool:
    """The project's data is still on the PostgreSQL 15 volume only (plan/upgrade.py `pending`)."""
    return plan.pending(project, project_volumes(client, project))


def writers(client: docker.DockerClient, rendered: Rendered) -> list[Container]:
    """The running containers of the services that write to the database."""
    services = {s.name for s in rendered.plan.services if s.role in WRITER_ROLES}
    return [c for c in project_containers(client, rendered.plan.project)
            if c.labels.get(labels.SERVICE) in services and c.status == "running"]


def _run(container: Container, command: list[str], doing: str) -> str:
    with engine_errors(doing):
        code, (out, err) = container.exec_run(command, demux=True)
    if code != 0:
        message = (err or out or b"").decode(errors="replace").strip()[-4000:]
        raise StackError(f"{doing} failed in {container.name}:\n{message or f'exit code {code}'}")
    return (out or b"").decode(errors="replace")


def databases(container: Container) -> list[str]:
    out = _run(container, [*PSQL, "-d", "postgres", "-c", DATABASES_SQL], "listing the databases")
    return [str(row["datname"]) for row in parse_csv(out)]


def count_rows(container: Container, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Each database's tables and their exact row counts."""
    counts: dict[str, dict[str, int]] = {}
    for name in names:
        out = _run(container, [*PSQL, "-d", name, "-c", COUNT_SQL], f"counting the rows of {name}")
        counts[name] = {str(row["tbl"]): int(row["n"] or 0) for row in parse_csv(out)}
    return counts


def dump(client: docker.DockerClient, primary: Container, names: Sequence[str], folder: Path,
         report: Reporter) -> tuple[Path, dict[str, Path]]:
    """The roles (pg_dumpall --globals-only) and each database (pg_dump -Fc) of the old primary, streamed
    to files in `folder`."""
    roles = folder / "globals.sql"
    report.step(f"dumping the roles from {primary.name} to {roles}")
    stream_to_file(client, primary, ["pg_dumpall", *SOCKET, "--globals-only"], roles, "pg_dumpall")
    dumps = {}
    for name in names:
        dumps[name] = folder / f"{name}.dump"
        report.step(f"dumping database {name} from {primary.name} to {dumps[name]}")
        stream_to_file(client, primary, ["pg_dump", *SOCKET, "-d", name, "-Fc"], dumps[name], f"pg_dump of {name}")
        report.detail(f"{dumps[name].name}: {dumps[name].stat().st_size} bytes")
    return roles, dumps


def restore(leader: Container, roles: Path, dumps: dict[str, Path], report: Reporter) -> None:
    """The roles, then each database, into the new cluster's leader (`postgres`' objects into its own)."""
    out = _run(leader, [*PSQL, "-d", "postgres", "-c", "SELECT rolname FROM pg_roles"], "listing the roles")
    script = roles.with_name("globals-restore.sql")
    script.write_text(plan.restorable_globals(roles.read_text(), (str(r["rolname"]) for r in parse_csv(out))))
    script.chmod(0o600)
    steps = [(script, ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *SOCKET, "-d", "postgres", "-f"], "the roles")]
    for name, path in dumps.items():
        create = [] if name == "postgres" else ["--create"]  # the cluster has its own `postgres` already
        steps.append((path, ["pg_restore", *SOCKET, "-d", "postgres", *create, "--exit-on-error"],
                      f"database {name}"))
    for path, command, what in steps:
        inside = f"deploystack-upgrade-{path.name}"
        put_file(leader, path, inside, report)
        try:
            report.step(f"restoring {what} on {leader.name}")
            _run(leader, ["timeout", "3600", *command, f"/tmp/{inside}"], f"restoring {what}")
        finally:
            with engine_errors(f"cleaning up {leader.name}"):
                leader.exec_run(["rm", "-f", f"/tmp/{inside}"])


def _old_db_containers(client: docker.DockerClient, project: str) -> list[Container]:
    return [c for c in project_containers(client, project)
            if str(c.labels.get(labels.SERVICE, "")).startswith((PRIMARY, REPLICA_PREFIX))]


def _stop(containers: Sequence[Container], report: Reporter) -> None:
    for container in containers:
        report.step(f"stopping {container.name}")
        with engine_errors(f"stopping {container.name}"):
            container.stop(timeout=60)


def _leader(client: docker.DockerClient, project: str, nodes: Sequence[str]) -> Container:
    leader = patroni.status(client, project, nodes).leader
    if leader is None:
        raise StackError("the new cluster has no leader (see `deploystack db status`)")
    return service_container(client, project, leader, running=True)


def remove_new_cluster(client: docker.DockerClient, new: Rendered, report: Reporter) -> None:
    """The Patroni cluster's containers and volumes (made by this upgrade: they hold nothing else)."""
    project = new.plan.project
    services = [s for s in new.plan.services if s.role == Role.DBC]
    for service in services:
        remove_service_containers(client, project, service.name)
    for volume in {m.source for s in services for m in s.mounts if not m.bind}:
        name = volume_name(project, volume)
        with engine_errors(f"removing volume {name}"):
            try:
                client.volumes.get(name).remove()
                report.step(f"removed volume {name}")
            except docker.errors.NotFound:
                pass


def upgrade(client: docker.DockerClient, old: Rendered, new: Rendered, folder: Path, converge: Converge,
            write: Write, report: Reporter) -> Result:
    """Move the stack of `old` (PostgreSQL 15) to `new` (Patroni, PostgreSQL 17); see the module's doc."""
    project = new.plan.project
    started = time.monotonic()
    if not pending(client, project):
        raise UsageError(plan.nothing_message(project))
    # The old primary runs (started again if it was stopped), on the old output's files.
    write(old)
    converge(dataclasses.replace(old, plan=subset(old.plan, [PRIMARY])), True)
    primary = service_container(client, project, PRIMARY, running=True)
    stopped = writers(client, old)
    new_started = False
    try:
        _stop(stopped, report)
        names = databases(primary)
        before = count_rows(primary, names)
        folder.mkdir(mode=0o700, parents=True, exist_ok=False)
        roles, dumps = dump(client, primary, names, folder, report)
        _stop([c for c in _old_db_containers(client, project) if c.status == "running"], report)
        new_started = True
        write(new)
        # The cluster alone, with no provisioning: the roles and databases come from the dump.
        nodes = [s.name for s in new.plan.services if s.name.startswith(NODE_PREFIX)]
        cluster = dataclasses.replace(subset(new.plan, [DB_ROUTER, *nodes]), tenancy=None)
        converge(dataclasses.replace(new, plan=cluster), True)
        leader = _leader(client, project, nodes)
        restore(leader, roles, dumps, report)
        after = count_rows(leader, names)
        wrong = plan.mismatches(before, after)
        if wrong:
            raise StackError("row counts differ after the restore:\n" + "\n".join(wrong[:50]))
        tables, rows = plan.total_rows(before)
        report.step(f"rows checked: {rows} in {tables} tables of {len(names)} databases, the same before and after")
        wait_for_replicas(client, project, leader, report)
    except (DeployError, KeyboardInterrupt, docker.errors.DockerException) as exc:
        raise _rolled_back(client, old, new, new_started, converge, write, report, exc) from exc
    # From here the apps write to the new cluster: a failure is no longer rolled back (`up` again).
    try:
        converge(new, False)
    except DeployError as exc:
        raise StackError(f"{exc}\nThe data is on the new cluster (restored, every table's rows checked); only "
                         "bringing the rest of the stack up failed: fix the cause and run `deploystack up`") from exc
    return Result(tables, rows, names, time.monotonic() - started, folder,
                  plan.removal_note(plan.old_volumes_of(project, project_volumes(client, project)), str(folder)))


def _rolled_back(client: docker.DockerClient, old: Rendered, new: Rendered, new_started: bool, converge: Converge,
                 write: Write, report: Reporter, cause: BaseException) -> DeployError:
    """Undo what the upgrade did (the new cluster; the stopped containers), and say so."""
    why = str(cause) or type(cause).__name__
    report.step(f"db upgrade failed ({why.splitlines()[0]}): rolling back")
    try:
        if new_started:
            remove_new_cluster(client, new, report)
        write(old)
        converge(old, False)
    except DeployError as exc:
        return StackError(
            f"db upgrade failed: {why}\nand the rollback failed too: {exc}\nThe PostgreSQL 15 volumes are "
            f"untouched. To start the old stack: remove `ha: patroni` from the spec, remove the new cluster "
            f"(`docker rm -f` its etcd-*, db-node-*, db-router containers and `docker volume rm` their "
            f"{plan.node_volume_prefix(new.plan.project)}*, {new.plan.project}_etcd-* volumes), "
            "then `deploystack up`")
    return StackError(
        f"db upgrade failed: {why}\nRolled back: the PostgreSQL 15 stack runs again as before (nothing of the "
        "new cluster is left). Fix the cause and run `deploystack db upgrade` again, or remove `ha: patroni` "
        "from the spec to stay on PostgreSQL 15.")

