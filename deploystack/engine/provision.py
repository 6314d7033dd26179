"""The apps' PostgreSQL roles and databases, made on the primary once it is ready, before migrations.

`up` (through the converger) runs plan/tenancy.py's psql script by `docker exec` as postgres over the
local socket; the passwords travel in the exec's environment, read by psql's `\\getenv`, so they are on
no command line. Idempotent: a second run changes nothing but the roles' password hashes.
"""

from __future__ import annotations

import docker
from docker.models.containers import Container

from deploystack.engine.client import engine_errors
from deploystack.engine.lookup import service_container
from deploystack.engine.report import Reporter
from deploystack.errors import EngineError
from deploystack.plan.dbc import PRIMARY
from deploystack.plan.model import Tenancy
from deploystack.plan.tenancy import provision_sql

SQL_VARIABLE = "DEPLOYSTACK_PROVISION_SQL"
PSQL = ["timeout", "600", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql",
        "-U", "postgres", "-d", "postgres"]


def database_leader(client: docker.DockerClient, project: str) -> Container:
    """The container that takes writes: every write of provisioning goes there. (The one place that
    knows which node leads; today the `db-primary` service's container.)"""
    return service_container(client, project, PRIMARY, running=True)


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
