"""DBC on Patroni (`dbc.ha: patroni`): PostgreSQL 17 nodes that Patroni runs, etcd as Patroni's store, and
HAProxy as the router the apps connect to.

- `db-node-1..N` (N = dbc.replicas + 1): one image, no fixed role. Patroni holds the leader key in etcd,
  promotes a standby when the leader's key expires, and rewinds an old leader into a standby.
- `etcd-1..3`: three members, so that losing one keeps a quorum (two of three).
- `db-router`: HAProxy. Port 5432 goes to the node whose Patroni REST API answers 200 on `/primary`, port
  5433 to the standbys (`/replica`), or to the leader when no standby is up. The apps' settings name only
  `db-router`, a container that stays: a name that always resolves, and `scale dbc=N` changes the
  router's file (a reload), never an app's environment.
"""

from __future__ import annotations

from deploystack.plan import backups
from deploystack.plan import hardening as h
from deploystack.plan.bases import base_image
from deploystack.plan.model import Build, ConfigFile, HealthCheck, Mount, Service
from deploystack.plan.names import DB_ROUTER as ROUTER
from deploystack.plan.names import ETCD_PREFIX, NODE_PREFIX, Role
from deploystack.plan.secrets import ref
from deploystack.plan.tenancy import APPS_GROUP
from deploystack.spec.models import DBC, Stack

ETCD_MEMBERS = 3  # a quorum of two survives one lost member; five would cost two more containers
WRITE_PORT = 5432  # the router's port for the leader
READ_PORT = 5433  # the router's port for the standbys
REST_PORT = 8008  # Patroni's REST API on every node
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
RELEASE = "trixie"  # Debian 13: PostgreSQL 17, Patroni 4.0, etcd 3.5, HAProxy 3.0
PG_MAJOR = 17
PGDATA = "/var/lib/postgresql/data"
REPLICATION_USER = "replicator"
SUPERUSER = "postgres"
RESTAPI_USER = "patroni"
SUPERUSER_SECRET = "DB_SUPERUSER_PASSWORD"
RESTAPI_SECRET = "PATRONI_RESTAPI_PASSWORD"
SECRETS = (SUPERUSER_SECRET, RESTAPI_SECRET)
CONFIG_DIR = "config/patroni"
ROUTER_CONFIG_DIR = "config/db-router"
MAX_WAL_SENDERS = 2 * 16 + 4  # as for streaming replicas: sized for dbc.replicas' maximum, never restarted

# Failover timing. The leader's key lives TTL seconds after its last renewal (an etcd lease); each member
# runs its loop every LOOP_WAIT seconds, and gives up on etcd or PostgreSQL after RETRY_TIMEOUT. Patroni
# requires loop_wait + 2 * retry_timeout <= ttl, and raises a ttl under 20 to 20 (its minimum). A killed
# leader is replaced within TTL + LOOP_WAIT (+ the promotion, under a second), and the router sends
# writes there after one passed check (CHECK_INTERVAL_MS): about 21-24 s in all (docs/db.md).
TTL = 20
LOOP_WAIT = 2
RETRY_TIMEOUT = 5
MAXIMUM_LAG_ON_FAILOVER = 1 << 20  # bytes: a standby further behind is not promoted (async mode)
CHECK_INTERVAL_MS = 1000
CHECK_FALL = 2  # failed checks before the router takes a node out
CONNECT_TIMEOUT_S = 2  # the router's connect timeout to a node: a dead node costs at most this


def node_names(stack: Stack) -> list[str]:
    return [f"{NODE_PREFIX}{n}" for n in range(1, stack.dbc.replicas + 2)]


def etcd_names() -> list[str]:
    return [f"{ETCD_PREFIX}{n}" for n in range(1, ETCD_MEMBERS + 1)]


def enabled(stack: Stack) -> bool:
    return stack.dbc.ha == "patroni"


def router_services(stack: Stack) -> list[str]:
    """What apps wait for before they start: the router (healthy once it has a leader), else nothing."""
    return [ROUTER] if enabled(stack) else []


def database_env(stack: Stack) -> dict[str, str]:
    """The apps' database variables that differ on Patroni: the router's ports, and libpq's check that
    the default connection is writable (a leader that just stepped down is refused, never written to)."""
    if not enabled(stack):
        return {}
    return {"DB_HOST": ROUTER, "DB_PORT": str(WRITE_PORT), "DB_TARGET_SESSION_ATTRS": "read-write",
            "DB_REPLICAS": f"{ROUTER}:{READ_PORT}" if stack.dbc.replicas else ""}


def parameters(dbc: DBC) -> dict[str, object]:
    """PostgreSQL settings every node shares (Patroni keeps them in etcd and applies them everywhere)."""
    return {
        "max_connections": dbc.max_connections,
        "shared_buffers": dbc.shared_buffers,
        "max_wal_senders": MAX_WAL_SENDERS,
        "max_replication_slots": MAX_WAL_SENDERS,
        "wal_level": "replica",
        "wal_log_hints": "on",  # pg_rewind needs it (or checksums, which initdb turns on too)
        "wal_keep_size": "256MB",
        "hot_standby": "on",
        "hot_standby_feedback": "on",
        "password_encryption": "scram-sha-256",
        "jit": "off",  # the image carries no LLVM
        "timezone": "UTC",
        "log_timezone": "UTC",
        "log_line_prefix": "%m [%p] %q%u@%d ",
    }


def pg_hba(stack: Stack) -> list[str]:
    """Local: Patroni and `docker exec` as postgres; over the network: passwords (SCRAM) only."""
    return [
        f"local all {SUPERUSER} trust",
        "local all all scram-sha-256",
        f"host replication {REPLICATION_USER} all scram-sha-256",
        f"host all {SUPERUSER} all scram-sha-256",  # pg_rewind from a rejoining node
        f"host all +{APPS_GROUP} all scram-sha-256",  # each app its own role (plan/tenancy.py)
        "host all all all reject",
    ]


def patroni_config(stack: Stack) -> dict[str, object]:
    """patroni.yml, shared by every node (dumped as YAML); each node's name, addresses and passwords come
    from its PATRONI_* environment."""
    dbc = stack.dbc
    return {
        "scope": stack.project,
        "namespace": "/deploystack/",
        "restapi": {"listen": f"0.0.0.0:{REST_PORT}", "authentication": {"username": RESTAPI_USER}},
        "etcd3": {"hosts": [f"{name}:{ETCD_CLIENT_PORT}" for name in etcd_names()], "protocol": "http"},
        "bootstrap": {
            # Written to etcd when the cluster is made; later changes: `patronictl edit-config`.
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": MAXIMUM_LAG_ON_FAILOVER,
                # etcd unreachable: the leader keeps leading while it reaches every other member.
                "failsafe_mode": True,
                "synchronous_mode": dbc.synchronous,
                # Not strict: with no standby left the leader still takes writes (synchronous again
                # as soon as one is back).
                "synchronous_mode_strict": False,
                "postgresql": {"use_pg_rewind": True, "use_slots": True,
                               "parameters": parameters(dbc) | backups.archive_parameters(stack)},
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"0.0.0.0:{WRITE_PORT}",
            "data_dir": PGDATA,
            "bin_dir": f"/usr/lib/postgresql/{PG_MAJOR}/bin",
            "pgpass": "/run/postgresql/pgpass",
            "use_unix_socket": True,
            # No rewind user: pg_rewind then connects as the superuser, with its password.
            "authentication": {
                "superuser": {"username": SUPERUSER},
                "replication": {"username": REPLICATION_USER},
            },
            "parameters": {"unix_socket_directories": "/run/postgresql"},
            "pg_hba": pg_hba(stack),
            # An old leader whose rewind fails clones the new leader again instead of staying down.
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
        },
        "watchdog": {"mode": "off"},  # no /dev/watchdog in a container; fencing is the leader key's TTL
    }


def router_conf(stack: Stack) -> dict[str, object]:
    """haproxy.cfg's context: every node, checked through its Patroni REST API."""
    return {
        "nodes": node_names(stack),
        "write_port": WRITE_PORT,
        "read_port": READ_PORT,
        "rest_port": REST_PORT,
        "inter_ms": CHECK_INTERVAL_MS,
        "fall": CHECK_FALL,
        "connect_timeout_s": CONNECT_TIMEOUT_S,
        "maxconn": 4 * stack.dbc.max_connections,
    }


def node_env(stack: Stack, name: str) -> tuple[tuple[str, str], ...]:
    return (
        *backups.node_env(stack),
        ("PATRONI_NAME", name),
        ("PATRONI_SUPERUSER_PASSWORD", ref(SUPERUSER_SECRET)),
        ("PATRONI_REPLICATION_PASSWORD", ref("REPLICATION_PASSWORD")),
        ("PATRONI_RESTAPI_PASSWORD", ref(RESTAPI_SECRET)),
    )


def etcd_env(stack: Stack, name: str) -> tuple[tuple[str, str], ...]:
    cluster = ",".join(f"{member}=http://{member}:{ETCD_PEER_PORT}" for member in etcd_names())
    return (
        ("ETCD_NAME", name),
        ("ETCD_INITIAL_CLUSTER", cluster),
        ("ETCD_INITIAL_CLUSTER_STATE", "new"),
        ("ETCD_INITIAL_CLUSTER_TOKEN", stack.project),
        ("ETCD_LISTEN_CLIENT_URLS", f"http://0.0.0.0:{ETCD_CLIENT_PORT}"),
        ("ETCD_ADVERTISE_CLIENT_URLS", f"http://{name}:{ETCD_CLIENT_PORT}"),
        ("ETCD_LISTEN_PEER_URLS", f"http://0.0.0.0:{ETCD_PEER_PORT}"),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", f"http://{name}:{ETCD_PEER_PORT}"),
        ("ETCD_AUTO_COMPACTION_MODE", "periodic"),
        ("ETCD_AUTO_COMPACTION_RETENTION", "1h"),  # Patroni's key history is of no use after that
    )


def plan_patroni(stack: Stack) -> tuple[list[Service], list[str], list[ConfigFile]]:
    """The services, volumes and config files of a Patroni DBC."""
    dbc = stack.dbc
    base = (("BASE_IMAGE", base_image(RELEASE)),)
    etcds = etcd_names()
    services = [
        Service(
            name=name, role=Role.DBC,
            build=Build(role="etcd", repo="deploystack/etcd", context="build/etcd", args=base),
            environment=etcd_env(stack, name), mounts=(Mount(f"{name}-data", "/var/lib/etcd"),),
            healthcheck=HealthCheck(test=("etcd-health",), interval_s=2, start_period_s=60),
            cap_add=h.DROP_TO_USER, mem_limit="256m", pids_limit=h.PIDS_SMALL,
        )
        for name in etcds
    ]
    node_build = Build(role="patroni", repo="deploystack/patroni", context="build/patroni", args=base)
    nodes = node_names(stack)
    for name in nodes:
        services.append(Service(
            name=name, role=Role.DBC, build=node_build, environment=node_env(stack, name),
            mounts=(Mount(f"{name}-data", PGDATA),),
            healthcheck=HealthCheck(test=("patroni-health",), interval_s=2, start_period_s=180),
            depends_on=tuple(etcds), config_dir=CONFIG_DIR, stop_grace_s=60,
            cap_add=h.DROP_TO_USER, mem_limit=dbc.memory, pids_limit=h.db_pids(dbc.max_connections),
        ))
    services.append(Service(
        name=ROUTER, role=Role.DBC,
        build=Build(role="db-router", repo="deploystack/db-router", context="build/db-router", args=base),
        healthcheck=HealthCheck(test=("db-router-health",), interval_s=2, start_period_s=180),
        # Only the first node: a node added by `scale dbc=N` must not change (and so recreate) the router.
        depends_on=(nodes[0],), config_dir=ROUTER_CONFIG_DIR,
        # A new node list (scale dbc=N) is a reload: the master re-reads the file, connections stay.
        reload=("sh", "-c", "kill -USR2 1"),
        cap_add=(h.SETUID, h.SETGID), read_only=True, tmpfs=(h.RUN, h.TMP), mem_limit="256m",
        pids_limit=h.PIDS,
    ))
    backup_services, backup_configs = backups.plan_backups(stack, base)
    services += backup_services
    configs = [
        ConfigFile(f"{CONFIG_DIR}/patroni.yml", "", patroni_config(stack), yaml=True),
        ConfigFile(f"{ROUTER_CONFIG_DIR}/haproxy.cfg", "db-router/templates/haproxy.cfg.j2", router_conf(stack)),
        *backup_configs,
    ]
    return services, [m.source for s in services for m in s.mounts], configs
