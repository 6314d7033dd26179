"""DBC: PostgreSQL primary plus streaming replicas, one image, told apart by DB_ROLE."""

from __future__ import annotations

from deploystack.plan.model import Build, ConfigFile, HealthCheck, Mount, Service
from deploystack.plan.secrets import ref
from deploystack.spec.models import Stack

PRIMARY = "db-primary"
REPLICATION_USER = "replicator"
PORT = 5432
MAX_WAL_SENDERS = 2 * 16 + 4  # dbc.replicas is at most 16


def replica_names(stack: Stack) -> list[str]:
    return [f"db-replica-{n}" for n in range(1, stack.dbc.replicas + 1)]


def slot_name(replica: str) -> str:
    return replica.removeprefix("db-").replace("-", "_")  # db-replica-1 -> replica_1


def plan_dbc(stack: Stack) -> tuple[list[Service], list[str], list[ConfigFile]]:
    dbc = stack.dbc
    build = Build(role="db", repo="deploystack/db", context="build/db")
    common = (
        ("POSTGRES_DB", dbc.database),
        ("POSTGRES_USER", dbc.user),
        ("POSTGRES_PASSWORD", ref("POSTGRES_PASSWORD")),
        ("REPLICATION_USER", REPLICATION_USER),
        ("REPLICATION_PASSWORD", ref("REPLICATION_PASSWORD")),
    )
    health = HealthCheck(test=("db-health",), start_period_s=120)
    config = "config/db"
    replicas = replica_names(stack)
    services = [
        Service(
            name=PRIMARY, role="dbc", build=build,
            # No list of replicas here: each replica makes its own slot, so adding one never
            # recreates the primary.
            environment=(("DB_ROLE", "primary"), *common),
            mounts=(Mount(f"{PRIMARY}-data", "/var/lib/postgresql/data"),),
            healthcheck=health, config_dir=config, stop_grace_s=60,
        )
    ]
    for replica in replicas:
        services.append(
            Service(
                name=replica, role="dbc", build=build,
                environment=(("DB_ROLE", "replica"), *common, ("PRIMARY_HOST", PRIMARY),
                             ("REPLICA_SLOT", slot_name(replica))),
                mounts=(Mount(f"{replica}-data", "/var/lib/postgresql/data"),),
                healthcheck=health, config_dir=config, depends_on=(PRIMARY,), stop_grace_s=60,
            )
        )
    configs = [
        ConfigFile(f"{config}/postgresql.conf", "db/templates/postgresql.conf.j2", {
            "max_connections": dbc.max_connections,
            # Sized for the spec's most replicas (a sender each, plus one per base backup), not for
            # today's count: changing it needs a restart, and `scale dbc=N` must not restart the primary.
            "max_wal_senders": MAX_WAL_SENDERS,
            "shared_buffers": dbc.shared_buffers,
            "settings": {},
        }),
        ConfigFile(f"{config}/pg_hba.conf", "db/templates/pg_hba.conf.j2", {
            "database": dbc.database, "user": dbc.user, "replication_user": REPLICATION_USER,
        }),
    ]
    return services, [m.source for s in services for m in s.mounts], configs
