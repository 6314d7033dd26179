"""The apps' PostgreSQL roles and databases, made on the primary once it is ready, before migrations.

`up` (through the converger) runs plan/tenancy.py's psql script by `docker exec` as postgres over the
local socket; the passwords travel in the exec's environment, read by psql's `\\getenv`, so they are on
no command line. Idempotent: a second run changes nothing but the roles' password hashes.
"""

from __future__ import annotations

import threading
import time

import docker
from docker.models.containers import Container

from deploystack.engine import patroni
from deploystack.engine.client import engine_errors
from deploystack.engine.lookup import service_container
from deploystack.engine.report import Reporter
from deploystack.errors import EngineError, UsageError
from deploystack.plan.model import Tenancy
from deploystack.plan.names import PRIMARY, service_name
from deploystack.plan.tenancy import provision_sql

SQL_VARIABLE = "DEPLOYSTACK_PROVISION_SQL"
SWARM_SERVICE = "com.docker.swarm.service.name"
PSQL = ["timeout", "600", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql",
        "-U", "postgres", "-d", "postgres"]



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
    """On a swarm, where no converger waits for the primary: provision as soon as its task is healthy, in
    a thread, while `docker stack deploy` is waited for (the migration jobs and apps retry until then)."""

    def __init__(self, client: docker.DockerClient, project: str, tenancy: Tenancy, secrets: dict[str, str],
                 report: Reporter, timeout_s: float = 600.0) -> None:
        super().__init__(name="provision", daemon=True)
        self.args_ = (client, project, tenancy, secrets, report)
        self.timeout_s = timeout_s
        self.error: Exception | None = None

    def run(self) -> None:
        client, project, tenancy, secrets, report = self.args_
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                leader = database_leader(client, project)
                if leader.attrs.get("State", {}).get("Health", {}).get("Status") == "healthy":
                    run_provision(leader, tenancy, secrets, report)
                    self.error = None
                    return
            except (UsageError, EngineError) as exc:
                self.error = exc
            time.sleep(2)
        self.error = self.error or EngineError(f"{PRIMARY} was not healthy within {self.timeout_s:.0f} s: "
                                               "the apps' database roles are not provisioned")


def provision(client: docker.DockerClient, project: str, tenancy: Tenancy, secrets: dict[str, str],
              report: Reporter) -> None:
    """Make (or check) every app's role and database on the leader; migrate the shared legacy layout."""
    run_provision(database_leader(client, project), tenancy, secrets, report)


def run_provision(leader: Container, tenancy: Tenancy, secrets: dict[str, str], report: Reporter) -> None:
    """provision(), in the PostgreSQL container `leader`."""
    environment = {d.password_secret: secrets[d.password_secret] for d in tenancy.databases}
    environment[SQL_VARIABLE] = provision_sql(tenancy)
    report.step(f"database roles of {', '.join(d.app for d in tenancy.databases)} on {leader.name}")
    command = ["sh", "-c", f'printf "%s" "${SQL_VARIABLE}" | exec "$@"', "psql", *PSQL]
    with engine_errors(f"provisioning the apps' database roles on {leader.name}"):
        code, out = leader.exec_run(command, environment=environment, user="postgres")
    if code != 0:
        raise EngineError(f"provisioning the apps' database roles on {leader.name} failed:\n"
                          + out.decode(errors="replace").strip()[-4000:])
