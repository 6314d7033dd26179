"""DBC: PostgreSQL primary plus streaming replicas, one image, told apart by DB_ROLE."""

from __future__ import annotations

from deploystack.plan import hardening as h
from deploystack.plan.model import Build, ConfigFile, HealthCheck, Mount, Port, ProjectPlan, Service
from deploystack.plan.names import OFFSITE_SLOT_PREFIX, Role, data_volume, is_replica, network_name, slot_name
from deploystack.plan.names import PRIMARY as PRIMARY  # where the other role modules found it
from deploystack.plan.names import replica_names as numbered_replicas
from deploystack.plan.secrets import SUPERUSER_SECRET, ref
from deploystack.plan.tenancy import APPS_GROUP
from deploystack.spec.models import DBC, Offsite, Stack

REPLICATION_USER = "replicator"
PORT = 5432
MAX_WAL_SENDERS = 2 * 16 + 4  # dbc.replicas is at most 16 (plus the offsite replica and its base backup)
CONFIG_DIR = "config/db"
# The primary's server certificate, in the config folder; the entrypoint copies the key to where only
# postgres can read it (a bind-mounted file keeps the host's owner).
TLS_CERT, TLS_KEY = f"{CONFIG_DIR}/tls/server.crt", f"{CONFIG_DIR}/tls/server.key"
SERVER_TLS_DIR = "/run/postgresql/tls"
OFFSITE_SECRET = "OFFSITE_REPLICATION_PASSWORD"
OFFSITE_NETWORK = "offsite"


def replica_names(stack: Stack) -> list[str]:
    return numbered_replicas(stack.dbc.replicas)


def wanted_slots(plan: ProjectPlan) -> tuple[list[str], list[str]]:
    """(replica services, the replication slots they and the offsite replica use) of a plan."""
    names = [s.name for s in plan.services]
    replicas = [name for name in names if is_replica(name)]
    slots = [slot_name(r) for r in replicas]
    if PRIMARY in names:
        offsite = dict(plan.service(PRIMARY).environment).get("OFFSITE_USER")
        slots += [offsite] if offsite else []  # the offsite replica's slot is named like its role
    return replicas, slots


def offsite_role(offsite: Offsite) -> str:
    """The offsite replica's replication role, slot and application_name on the primary."""
    return f"{OFFSITE_SLOT_PREFIX}{offsite.name}"


def postgresql_conf(dbc: DBC, tls: bool) -> dict[str, object]:
    return {
        "max_connections": dbc.max_connections,
        # Sized for the spec's most replicas (a sender each, plus one per base backup), not for
        # today's count: changing it needs a restart, and `scale dbc=N` must not restart the primary.
        "max_wal_senders": MAX_WAL_SENDERS,
        "shared_buffers": dbc.shared_buffers,
        "settings": {},
        "tls": {"cert": f"{SERVER_TLS_DIR}/server.crt", "key": f"{SERVER_TLS_DIR}/server.key"} if tls else None,
    }


def pg_hba_conf(stack: Stack, offsite: Offsite | None, superuser: bool = False) -> dict[str, object]:
    """`superuser`: postgres may log in over TCP with its password (on a swarm: the provisioning job)."""
    # Without an offsite replica nothing outside the private network reaches PostgreSQL. With one, the
    # published port is the same listener the apps use, so the app and in-stack replication roles are
    # limited to the containers of the private network, by name: PostgreSQL looks the client address up
    # in Docker's DNS (`<container>.<project>_private`); a connection through the published port comes
    # from a gateway or a remote address, which has no such name. 127.0.0.1 is `db backup --physical`.
    clients = ["127.0.0.1/32", f".{network_name(stack.project, 'private')}"] if offsite else ["all"]
    return {"apps_group": APPS_GROUP, "replication_user": REPLICATION_USER,
            "clients": clients, "offsite_user": offsite_role(offsite) if offsite else None,
            "superuser": superuser}


def plan_dbc(stack: Stack, swarm: bool = False) -> tuple[list[Service], list[str], list[ConfigFile]]:
    """`swarm`: the primary also takes the superuser over TCP, with a password (DB_SUPERUSER_PASSWORD):
    on a swarm the apps' roles are made by a job on the private network, as the primary may run on a node
    whose engine deploystack does not reach (engine/provision.py). Compose provisions through the socket."""
    dbc = stack.dbc
    offsite = dbc.offsite
    build = Build(role="db", repo="deploystack/db", context="build/db")
    # The apps' roles and databases are made by `up` once the primary is ready (engine/provision.py):
    # adding an app changes nothing here, so it never restarts the database.
    common = (
        ("REPLICATION_USER", REPLICATION_USER),
        ("REPLICATION_PASSWORD", ref("REPLICATION_PASSWORD")),
    )
    health = HealthCheck(test=("db-health",), start_period_s=120)
    # The entrypoint (root) owns and chmods PGDATA, the TLS key and the replication passfile for postgres,
    # then drops to it. DAC_OVERRIDE: it looks into PGDATA (postgres's, 0700) at every start; without it
    # PG_VERSION is not found and a restart would take the data for an empty folder.
    # Not read-only: `db restore` puts the dump into the container's /tmp through Docker's archive API,
    # which writes to the container's own file system and refuses a read-only one.
    pids = h.db_pids(dbc.max_connections)
    config = CONFIG_DIR
    replicas = replica_names(stack)
    primary_env: tuple[tuple[str, str], ...] = (("DB_ROLE", "primary"), *common)
    if swarm:
        primary_env += (("SUPERUSER_PASSWORD", ref(SUPERUSER_SECRET)),)
    published: tuple[Port, ...] = ()
    networks: tuple[str, ...] = ("private",)
    if offsite is not None:
        # The offsite replica makes its own slot, as the in-stack ones do; the primary only has its role.
        primary_env += (("OFFSITE_USER", offsite_role(offsite)), ("OFFSITE_PASSWORD", ref(OFFSITE_SECRET)))
        published = (Port(offsite.bind, offsite.port, PORT),)
        # `private` is internal, and Docker publishes no port there: a network of its own for it.
        networks = (OFFSITE_NETWORK, "private")
    services = [
        Service(
            name=PRIMARY, role=Role.DBC, build=build,
            # No list of replicas here: each replica makes its own slot, so adding one never
            # recreates the primary.
            environment=primary_env, networks=networks, ports=published,
            mounts=(Mount(data_volume(PRIMARY), "/var/lib/postgresql/data"),),
            healthcheck=health, config_dir=config, stop_grace_s=60,
            cap_add=h.DROP_TO_USER, mem_limit=dbc.memory, pids_limit=pids,
        )
    ]
    for replica in replicas:
        services.append(
            Service(
                name=replica, role=Role.DBC, build=build,
                environment=(("DB_ROLE", "replica"), *common, ("PRIMARY_HOST", PRIMARY),
                             ("REPLICA_SLOT", slot_name(replica))),
                mounts=(Mount(data_volume(replica), "/var/lib/postgresql/data"),),
                healthcheck=health, config_dir=config, depends_on=(PRIMARY,), stop_grace_s=60,
                cap_add=h.DROP_TO_USER, mem_limit=dbc.memory, pids_limit=pids,
            )
        )
    # One folder for every node: with TLS on, an in-stack replica serves it too (and keeps it if promoted).
    configs = [
        ConfigFile(f"{config}/postgresql.conf", "db/templates/postgresql.conf.j2",
                   postgresql_conf(dbc, tls=offsite is not None)),
        ConfigFile(f"{config}/pg_hba.conf", "db/templates/pg_hba.conf.j2", pg_hba_conf(stack, offsite, swarm)),
    ]
    return services, [m.source for s in services for m in s.mounts], configs
