"""pgBackRest on a Patroni DBC (`dbc.backups`, plan/backups.py): the backups and the recoverable window, the
archiver's health, a point-in-time restore into the running stack, and a restore drill (`db verify`).

Everything pgBackRest does runs in the stack's own containers: `pgbackrest info` in the backup service (the
repository host); restores and drills in one-off containers of a database node's image, which reach the
repository through the backup service's TLS server with the nodes' client certificate. The one-offs are
removed afterwards whatever happens.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Sequence

import docker
import docker.errors
from docker.models.containers import Container

from deploystack import labels
from deploystack.backupinfo import (
    Archiver,
    BackupsReport,
    parse_archiver,
    parse_info,
    parse_state,
    restore_problem,
)
from deploystack.dbparse import parse_csv
from deploystack.engine import patroni
from deploystack.engine.apply import hardening_options, service_mounts
from deploystack.engine.client import engine_errors
from deploystack.engine.db import psql
from deploystack.engine.lookup import project_containers, service_container
from deploystack.engine.oneoff import oneoff_spec
from deploystack.engine.provision import provision
from deploystack.engine.report import Reporter
from deploystack.errors import StackError, UsageError
from deploystack.plan.backups import SERVICE
from deploystack.plan.names import ETCD_PREFIX, Role, network_name
from deploystack.render.project import Rendered

STATE = "/run/postgresql/backup-state"
PAUSED = "/run/postgresql/backup-paused"
PAUSE_WAIT_S = 900.0  # a backup that runs when a restore starts is let finish
LEADER_WAIT_S = 300.0
INFO_TIMEOUT_S = 60
# backup-restore-node sets these roles' passwords from these variables (the node's own PATRONI_* names).
RESTORED_PASSWORDS = (("PATRONI_SUPERUSER_PASSWORD", "DB_SUPERUSER_PASSWORD"),
                      ("PATRONI_REPLICATION_PASSWORD", "REPLICATION_PASSWORD"))
ARCHIVER_SQL = """
SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time,
       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') AS pending,
       (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') AS segment_size
  FROM pg_stat_archiver
"""


def _exec(container: Container, command: Sequence[str], doing: str, user: str = "postgres") -> tuple[int, str]:
    with engine_errors(doing):
        code, output = container.exec_run(list(command), user=user, demux=False)
    return int(code), (output or b"").decode(errors="replace")


def backup_service(client: docker.DockerClient, project: str) -> Container:
    return service_container(client, project, SERVICE, running=True)


def repository_info(client: docker.DockerClient, project: str) -> tuple[str, dict[str, str]]:
    """`pgbackrest info --output=json` and the scheduler's state, from the backup service."""
    container = backup_service(client, project)
    # Bounded: pgBackRest retries an unreachable store for minutes (measured: over four with the target down).
    code, out = _exec(container, ["timeout", str(INFO_TIMEOUT_S), "pgbackrest", "info", "--output=json",
                                  "--log-level-console=off", "--log-level-stderr=error"],
                      "reading the backup repository")
    if code == 124:
        raise StackError(f"pgbackrest info did not answer within {INFO_TIMEOUT_S}s in {container.name}: the "
                         "repository's store is unreachable or too slow")
    if code != 0:
        raise StackError(f"pgbackrest info failed in {container.name}: {out.strip()[-2000:]}")
    _, state = _exec(container, ["cat", STATE], "reading the scheduler's state")
    return out, parse_state(state)


def archiver(client: docker.DockerClient, project: str) -> tuple[Archiver | None, str | None]:
    """pg_stat_archiver and the WAL held back, on the leader; or None and why."""
    from deploystack.engine.provision import database_leader

    try:
        leader = database_leader(client, project)
    except UsageError as exc:
        return None, str(exc)
    out, error = psql(client, leader, ARCHIVER_SQL)
    rows = parse_csv(out or "")
    if not rows:
        return None, error or "pg_stat_archiver is empty"
    return parse_archiver(rows[0]), None


def report(client: docker.DockerClient, project: str, repository: str, off_host: bool) -> BackupsReport:
    info, state = repository_info(client, project)
    found, error = archiver(client, project)
    result = BackupsReport(project, repository, off_host, parse_info(info), found, state)
    if error:
        result.problems.append(f"archiver: {error}")
    if found is not None and found.failing:
        result.problems.append(
            f"WAL archiving fails: {found.failed_count} failures, last {found.last_failed_wal} at "
            f"{found.last_failed_time}; {found.pending_segments} segments ({found.pending_bytes} bytes) held back")
    if state.get("last_result") == "failed":
        result.problems.append(f"the last scheduled backup failed: {state.get('last_error', '')}")
    stanza = state.get("stanza", "ok")
    if stanza.startswith("restore-pending"):
        result.problems.append(f"{stanza} (a stack destroyed before?): nothing of this database is archived or "
                               "backed up until `deploystack db restore --latest` brings that cluster back")
    elif stanza != "ok":
        result.problems.append(f"the repository's stanza is {stanza}")
    unhealthy = scheduler_health(client, project)
    if unhealthy is not None and not any(unhealthy in problem for problem in result.problems):
        result.problems.append(f"the backup service is unhealthy: {unhealthy}")
    return result


# -- one-off containers of a node's image ------------------------------------------------------------


def run_node_oneoff(client: docker.DockerClient, rendered: Rendered, node: str, command: Sequence[str],
                    with_data: bool, report: Reporter, data_of: Rendered | None = None,
                    env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `command` in a new container of `node`'s service (its image, environment, config and, with
    `with_data`, its data volume), on the private network; its exit code and output. Removed afterwards.
    `data_of`: another stack whose `node` volume is mounted instead (`db restore --into`); `env` over the
    service's environment."""
    service = rendered.plan.service(node)
    project = rendered.plan.project
    spec = oneoff_spec(rendered, service, rendered.images[node], env or {}, secrets.token_hex(16))
    mounts = [m for m in service_mounts(rendered, service) if m["Type"] != "volume"]
    if with_data:
        owner = data_of or rendered
        mounts += [m for m in service_mounts(owner, owner.plan.service(node)) if m["Type"] == "volume"]
    with engine_errors(f"creating {spec.name}"):
        container = client.containers.create(
            spec.image, command=list(command), name=spec.name, environment=spec.environment, labels=spec.labels,
            mounts=mounts, network=network_name(project, service.networks[0]), healthcheck={"test": ["NONE"]},
            detach=True, **hardening_options(service),
        )
    lines: list[str] = []
    try:
        with engine_errors(f"running {spec.name}"):
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    lines.append(line)
                    report.detail(line)
            code = int(container.wait().get("StatusCode", 1))
    finally:
        with engine_errors(f"removing {spec.name}"), contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    return code, "\n".join(lines)


def verify(client: docker.DockerClient, rendered: Rendered, nodes: Sequence[str], label: str | None,
           report: Reporter) -> tuple[bool, str]:
    """Restore a backup (default: the newest) into a throwaway container and check it (compose/patroni
    backup-verify): pg_amcheck, and each table's row count against the backup's record."""
    backup_service(client, rendered.plan.project)  # the repository is reached through it
    report.step(f"restoring {'backup ' + label if label else 'the newest backup'} into a throwaway container")
    code, output = run_node_oneoff(client, rendered, nodes[0], ["backup-verify", *([label] if label else [])],
                                   with_data=False, report=report)
    return code == 0, output


# -- restore into the running stack --------------------------------------------------------------------


def _pause(backup: Container, report: Reporter) -> None:
    """Stop the scheduler from starting a backup: it acknowledges (paused=yes) at the top of its loop, after
    a backup that runs has ended, so none starts once this returns."""
    _exec(backup, ["touch", PAUSED], "pausing the backup schedule")
    deadline = time.monotonic() + PAUSE_WAIT_S
    while True:
        _, out = _exec(backup, ["cat", STATE], "reading the scheduler's state")
        state = parse_state(out)
        if state.get("paused") == "yes":
            return
        if time.monotonic() > deadline:
            raise StackError(f"the backup schedule did not pause within {PAUSE_WAIT_S:.0f}s (running: "
                             f"{state.get('running') or 'nothing'}): try again later")
        if state.get("running"):
            report.step(f"waiting for the running backup ({state['running']}) to end")
        time.sleep(1)


def _resume(backup: Container) -> None:
    _exec(backup, ["rm", "-f", PAUSED], "resuming the backup schedule")


def _app_services(rendered: Rendered) -> set[str]:
    return {s.name for s in rendered.plan.services if s.role in (Role.APC, Role.APC_WORKER)}


def _wait_leader(client: docker.DockerClient, project: str, nodes: Sequence[str], node: str) -> None:
    deadline = time.monotonic() + LEADER_WAIT_S
    while True:
        status = patroni.status(client, project, nodes)
        if status.leader == node and any(m.service == node and m.patroni_state == "running" for m in status.members):
            return
        if time.monotonic() > deadline:
            raise StackError(f"{node} does not lead {LEADER_WAIT_S:.0f}s after the restore (leader: "
                             f"{status.leader or 'none'}); see `docker logs {project}-{node}-1`")
        time.sleep(1)


def check_restorable(client: docker.DockerClient, project: str, where: str, kind: str, target: str) -> None:
    """Refuse before anything stops: a repository that cannot be read, holds no backup, or not that one."""
    try:
        info, _ = repository_info(client, project)
    except StackError as exc:
        raise StackError(f"cannot read the backup repository ({where}): {exc}; nothing was stopped") from None
    problem = restore_problem(info, target if kind == "backup" else None)
    if problem:
        raise StackError(f"nothing to restore from {where}: {problem}; nothing was stopped")


def restore(client: docker.DockerClient, rendered: Rendered, nodes: Sequence[str], kind: str, target: str,
            report: Reporter, where: str, into: Rendered | None = None) -> None:
    """Restore the whole database to `kind` (time, latest, backup) `target`: writers and nodes stopped, the
    first node restored and recovered by pgBackRest, the others emptied (they clone it again), the old
    cluster's state removed from etcd so that Patroni starts on the restored data, everything started, the
    roles' passwords those of the stack's own secrets (a fresh stack's differ from the backed-up ones).

    `into`: another stack (already up) gets the restored data; this one's repository is read through its
    backup service as for itself (the one-off runs with this stack's node configuration, on its network,
    with the other stack's volume), and this stack is not touched."""
    source = rendered.plan.project
    backup = backup_service(client, source)
    check_restorable(client, source, where, kind, target)
    dest = into or rendered
    project = dest.plan.project
    first, others = nodes[0], list(nodes[1:])
    if into is None:
        report.step("archiving the current WAL segment (pgbackrest check)")
        code, out = _exec(backup, ["pgbackrest", "check", "--log-level-console=warn"], "pgbackrest check")
        if code != 0:
            report.detail(f"pgbackrest check failed (the newest transactions may not be archived): {out.strip()}")
        _pause(backup, report)
    containers = project_containers(client, project)
    by_service: dict[str, list[Container]] = {}
    for container in containers:
        by_service.setdefault(container.labels.get(labels.SERVICE, ""), []).append(container)
    writers = [c for s in sorted(_app_services(dest)) for c in by_service.get(s, []) if c.status == "running"]
    try:
        for container in writers:
            report.step(f"stopping {container.name} (a writer)")
            with engine_errors(f"stopping {container.name}"):
                container.stop(timeout=20)
        for node in reversed(nodes):  # the standbys first: the leader then hands over to no one
            for container in by_service.get(node, []):
                report.step(f"stopping {container.name}")
                with engine_errors(f"stopping {container.name}"):
                    container.stop(timeout=60)
        etcd = service_container(client, project, f"{ETCD_PREFIX}1", running=True)
        report.step(f"removing the cluster's state from etcd (/deploystack/{project}/)")
        code, out = _exec(etcd, ["etcdctl", "--endpoints=http://127.0.0.1:2379", "del", "--prefix",
                                 f"/deploystack/{project}/"], "clearing the cluster's state in etcd", user="")
        if code != 0:
            raise StackError(f"etcdctl del failed: {out.strip()}")
        report.step(f"restoring {first} with pgBackRest ({kind}{' ' + target if target else ''})")
        # The roles' passwords after the restore: the destination's own (backup-restore-node sets them).
        passwords = {name: dest.secrets[secret] for name, secret in RESTORED_PASSWORDS}
        passwords |= {"RESTORE_ARCHIVE_MODE": "off"} if into is not None else {}
        code, output = run_node_oneoff(client, rendered, first, ["backup-restore-node", kind, target],
                                       with_data=True, report=report, data_of=into, env=passwords)
        if code != 0:
            tail = "\n".join(output.splitlines()[-8:])
            raise StackError(f"the restore failed ({kind} {target}); the database nodes are stopped and "
                             f"{first}'s data directory may be empty: run `db restore` again with another "
                             f"target, e.g. --latest:\n{tail}")
        for node in others:
            report.step(f"emptying {node}'s data directory (it clones the restored node again)")
            code, output = run_node_oneoff(client, dest, node, ["bash", "-c", "find \"$PGDATA\" -mindepth 1 "
                                                               "-delete"], with_data=True, report=report)
            if code != 0:
                raise StackError(f"could not empty {node}'s data directory: {output.strip()[-500:]}")
        for container in by_service.get(first, []):
            report.step(f"starting {container.name}: Patroni takes the restored data over")
            with engine_errors(f"starting {container.name}"):
                container.start()
        _wait_leader(client, project, nodes, first)
        report.step(f"{first} leads")
        # The apps' roles and databases as `up` makes them, with this stack's passwords.
        if dest.plan.tenancy is not None:
            provision(client, project, dest.plan.tenancy, dest.secrets, report)
        for node in others:
            for container in by_service.get(node, []):
                with engine_errors(f"starting {container.name}"):
                    container.start()
        for node in others:
            patroni.wait_streaming(client, project, nodes, node, report)
    finally:
        for container in writers:
            report.step(f"starting {container.name}")
            with engine_errors(f"starting {container.name}"):
                container.start()
        if into is None:
            _resume(backup)


def scheduler_health(client: docker.DockerClient, project: str) -> str | None:
    """The backup service's own health check (backup-health: the scheduler alive, the last backup not
    failed, no schedule missed, the same for media snapshots), as the engine last ran it: None while it
    passes (or the container is still starting), else what it said."""
    try:
        container = backup_service(client, project)
    except UsageError as exc:
        return str(exc)
    health = (container.attrs.get("State") or {}).get("Health") or {}
    if health.get("Status") != "unhealthy":
        return None
    log = health.get("Log") or []
    lines = str(log[-1].get("Output") or "").strip().splitlines() if log else []
    said = lines[-1] if lines else "its health check fails"
    return said.split("error: ", 1)[-1]  # lib.sh's die: "<time> backup-health: error: <why>"
