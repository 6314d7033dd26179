"""The apps' PostgreSQL roles and databases, made on the primary once it is ready, before migrations.

`up` (through the converger) runs plan/tenancy.py's psql script by `docker exec` as postgres over the
local socket; the passwords travel in the exec's environment, read by psql's `\\getenv`, so they are on
no command line. Idempotent: a second run changes nothing but the roles' password hashes.

On a swarm the primary may run on a node whose engine deploystack does not reach: there a one-shot
service on the stack's private network runs the same script over TCP as the superuser, with the
passwords from the stack's Swarm secrets (docs/swarm.md, "The apps' database roles").
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import RestartPolicy, SecretReference

from deploystack import labels
from deploystack.engine import patroni
from deploystack.engine.client import engine_errors
from deploystack.engine.lookup import service_container
from deploystack.engine.report import Reporter
from deploystack.engine.swarm import NAMESPACE
from deploystack.errors import EngineError, UsageError
from deploystack.plan.dbc import PORT as DB_PORT
from deploystack.plan.model import ProjectPlan, Tenancy
from deploystack.plan.names import DB_ROUTER, NODE_PREFIX, PRIMARY, Role, network_name, service_name
from deploystack.plan.patroni import SUPERUSER, WRITE_PORT
from deploystack.plan.secrets import SUPERUSER_SECRET
from deploystack.plan.tenancy import provision_sql
from deploystack.render.swarm import secret_key

SQL_VARIABLE = "DEPLOYSTACK_PROVISION_SQL"
SWARM_SERVICE = "com.docker.swarm.service.name"
JOB = "db-provision"  # on a swarm: the one-shot service that provisions (swarm_provision)
JOB_TIMEOUT_S = 720.0
JOB_CONNECT_TRIES = 180  # 3 s apart (9 min): nodes pulling the images and a first initdb fit
FINAL_STATES = ("complete", "failed", "rejected", "shutdown", "orphaned", "remove")
PSQL = ["timeout", "600", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql",
        "-U", "postgres", "-d", "postgres"]



def password_secrets(tenancy: Tenancy) -> list[str]:
    """The secrets provision_sql reads (`\\getenv`): the apps' passwords and the replication roles'."""
    return [d.password_secret for d in tenancy.databases] + [secret for _, secret in tenancy.replication_roles]


def database_leader(client: docker.DockerClient, project: str) -> Container:
    """The container that takes writes: every write of provisioning goes there. (The one place that
    knows which node leads: the `db-primary` service's container, or on a swarm its task's container
    on this engine; with Patroni, the member Patroni reports as leader.)"""
    try:
        return service_container(client, project, PRIMARY, running=True)
    except UsageError:
        leader = patroni.status(client, project, ()).leader
        if leader is not None:
            return service_container(client, project, leader, running=True)
        with engine_errors(f"looking for {PRIMARY} of project {project}"):
            tasks = client.containers.list(filters={"status": "running", "label": SWARM_SERVICE + "="
                                                    + service_name(project, PRIMARY)})
        if not tasks:
            raise
        return tasks[0]


class SwarmProvisioner(threading.Thread):
    """On a swarm, where no converger waits for the primary: the provisioning job (swarm_provision), in a
    thread started once `docker stack deploy` has made the stack, while its services are waited for (the
    migration jobs and apps retry until their roles exist)."""

    def __init__(self, client: docker.DockerClient, plan: ProjectPlan, secrets: dict[str, str], report: Reporter,
                 timeout_s: float = JOB_TIMEOUT_S) -> None:
        super().__init__(name="provision", daemon=True)
        self.args_ = (client, plan, secrets, report)
        self.timeout_s = timeout_s
        self.error: Exception | None = None

    def run(self) -> None:
        client, plan, secrets, report = self.args_
        try:
            swarm_provision(client, plan, secrets, report, self.timeout_s)
        except (UsageError, EngineError) as exc:
            self.error = exc

    def check(self) -> None:
        """Raise what made the job fail (the stack then cannot converge: its migrations need the roles)."""
        if self.error is not None:
            raise self.error


def swarm_target(plan: ProjectPlan) -> tuple[str, int, str]:
    """(host, port) that takes the superuser's writes on the private network, and the service whose image
    has the matching psql: the primary; with Patroni, the router's write port (it follows the leader)."""
    if DB_ROUTER in {s.name for s in plan.services}:
        return DB_ROUTER, WRITE_PORT, f"{NODE_PREFIX}1"
    return PRIMARY, DB_PORT, PRIMARY


def job_script(host: str, port: int) -> str:
    """The job's shell: the secrets' files as variables (never arguments), then the provisioning script
    through psql over TCP. psql exits 2 when it gets no session (the server is not up yet, or an old
    primary that does not admit the superuser is still being replaced): that is retried, boundedly;
    anything else (3: an SQL error) ends the job."""
    psql = " ".join(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(port), "-U", SUPERUSER,
                     "-d", "postgres"])
    return (
        "set -eu\n"
        'for f in /run/secrets/*; do export "${f##*/}=$(cat "$f")"; done\n'
        f'export PGPASSWORD="${SUPERUSER_SECRET}" PGCONNECT_TIMEOUT=5\n'
        "tries=0\n"
        "while :; do\n"
        f'  rc=0; printf "%s" "${SQL_VARIABLE}" | {psql} || rc=$?\n'
        '  [ "$rc" -eq 2 ] || exit "$rc"\n'
        "  tries=$((tries + 1))\n"
        f'  [ "$tries" -lt {JOB_CONNECT_TRIES} ] || {{ echo "no session on {host}:{port}: giving up" >&2; exit 2; }}\n'
        "  sleep 3\n"
        "done\n"
    )


def swarm_provision(client: docker.DockerClient, plan: ProjectPlan, secrets: dict[str, str], report: Reporter,
                    timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Make the apps' roles and databases from a one-shot service on the stack's private network, which
    reaches the primary over TCP on whichever node it runs (`docker exec` reaches only the containers of
    the engine deploystack drives). The superuser's and the apps' passwords are the stack's Swarm secrets,
    files in the job's container; the script (plan/tenancy.py, no password in it) is a variable."""
    tenancy = plan.tenancy
    if tenancy is None:
        return
    report.step(f"database roles of {', '.join(d.app for d in tenancy.databases)}: a job on the private network")
    run_sql_job(client, plan, secrets, provision_sql(tenancy), password_secrets(tenancy),
                "provisioning the apps' database roles", timeout_s)


def run_sql_job(client: docker.DockerClient, plan: ProjectPlan, secrets: dict[str, str], sql: str,
                secret_names: list[str], what: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
    """Run the psql script `sql` as the superuser against the primary (or Patroni's leader), from the
    one-shot service PROJECT_db-provision on the private network; `secret_names`: the stack's secrets it
    reads besides the superuser's (`\\getenv`). Its output, once it completed; EngineError otherwise."""
    project = plan.project
    host, port, image_of = swarm_target(plan)
    name = service_name(project, JOB)
    with engine_errors(f"starting the job {name}"):
        image = client.services.get(service_name(project, image_of)).attrs["Spec"]["TaskTemplate"][
            "ContainerSpec"]["Image"]
        for leftover in client.services.list(filters={"name": name}):
            if leftover.name == name:
                leftover.remove()
        refs = [_secret_reference(client, project, n, secrets[n]) for n in (SUPERUSER_SECRET, *secret_names)]
        service = client.services.create(
            image, command=["sh", "-c", job_script(host, port)], name=name,
            env=[f"{SQL_VARIABLE}={sql}"], networks=[_network_id(client, project, "private")],
            secrets=refs, user=SUPERUSER, read_only=True, cap_drop=["ALL"],
            restart_policy=RestartPolicy(condition="none"),
            # The stack's label: `docker stack rm` takes a job left behind too.
            labels={NAMESPACE: project, labels.ONE_SHOT: "true", labels.ROLE: Role.DBC.value})
    try:
        state, why = _wait_job(client, service.id, timeout_s)
        if state != "complete":
            raise EngineError(f"{what} ({name} on {host}:{port}) {state}: {why}\n" + _job_logs(service)[-4000:])
        return _job_logs(service)
    finally:
        with engine_errors(f"removing the job {name}"), contextlib.suppress(docker.errors.NotFound):
            service.remove()


def _secret_reference(client: docker.DockerClient, project: str, name: str, value: str) -> SecretReference:
    """The stack's Swarm secret holding `value` (named as in the stack file), as file /run/secrets/<name>."""
    full = service_name(project, secret_key(name, value))
    found = [s for s in client.secrets.list(filters={"name": full}) if s.name == full]
    if not found:
        raise EngineError(f"the swarm has no secret {full} ({name}): the stack file was not deployed")
    return SecretReference(found[0].id, full, filename=name)


def _network_id(client: docker.DockerClient, project: str, network: str) -> str:
    full = network_name(project, network)
    found = [n for n in client.networks.list(names=[full]) if n.name == full]
    if not found:
        raise EngineError(f"the swarm has no network {full}: the stack file was not deployed")
    return str(found[0].id)


def _wait_job(client: docker.DockerClient, service_id: str, timeout_s: float) -> tuple[str, str]:
    """The job's task's final state and its error, once it has one (or `timeout` after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine_errors("waiting for the provisioning job"):
            tasks = client.api.tasks(filters={"service": service_id})
        for task in tasks:
            status = task["Status"]
            if status["State"] in FINAL_STATES:
                return str(status["State"]), str(status.get("Err") or status.get("Message") or "")
        time.sleep(1)
    return "timeout", f"not done within {timeout_s:.0f} s"


def _job_logs(service: Any) -> str:
    try:
        return b"".join(service.logs(stdout=True, stderr=True)).decode(errors="replace").strip()
    except docker.errors.APIError as exc:
        return f"(no logs: {exc})"


def provision(client: docker.DockerClient, project: str, tenancy: Tenancy, secrets: dict[str, str],
              report: Reporter) -> None:
    """Make (or check) every app's role and database on the leader; migrate the shared legacy layout."""
    run_provision(database_leader(client, project), tenancy, secrets, report)


def run_provision(leader: Container, tenancy: Tenancy, secrets: dict[str, str], report: Reporter) -> None:
    """provision(), in the PostgreSQL container `leader`."""
    environment = {name: secrets[name] for name in password_secrets(tenancy)}
    environment[SQL_VARIABLE] = provision_sql(tenancy)
    report.step(f"database roles of {', '.join(d.app for d in tenancy.databases)} on {leader.name}")
    command = ["sh", "-c", f'printf "%s" "${SQL_VARIABLE}" | exec "$@"', "psql", *PSQL]
    with engine_errors(f"provisioning the apps' database roles on {leader.name}"):
        code, out = leader.exec_run(command, environment=environment, user="postgres")
    if code != 0:
        raise EngineError(f"provisioning the apps' database roles on {leader.name} failed:\n"
                          + out.decode(errors="replace").strip()[-4000:])
