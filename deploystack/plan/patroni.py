"""DBC on Patroni (`dbc.ha: patroni`): PostgreSQL 17 nodes that Patroni runs, etcd as Patroni's store, and
HAProxy as the router the apps connect to.

- `db-node-1..N` (N = dbc.replicas + 1): one image, no fixed role. Patroni holds the leader key in etcd,
  promotes a standby when the leader's key expires, and rewinds an old leader into a standby.
- `etcd-1..3`: three members, so that losing one keeps a quorum (two of three). They are on `dcs`, a
  network of their own that only the nodes share with them: etcd has no TLS and no authentication here, and
  whoever reaches its client port can rewrite Patroni's dynamic configuration (`archive_command`: a shell
  command as postgres on every node) or delete the leader key. Not on `private`, so no app reaches them.
- `db-router`: HAProxy. Port 5432 goes to the node whose Patroni REST API answers 200 on `/primary`, port
  5433 to the standbys (`/replica`), or to the leader when no standby is up. The apps' settings name only
  `db-router`, a container that stays: a name that always resolves, and `scale dbc=N` changes the
  router's file (a reload), never an app's environment.
- `db-offsite` (with `dbc.offsite`): the same HAProxy, alone on the published port, to the leader only. The
  offsite replica streams through it from whichever node leads, over TLS, through a permanent slot that
  Patroni keeps on every node (docs/db.md, "An offsite replica").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

from deploystack.plan import backups
from deploystack.plan import hardening as h
from deploystack.plan.bases import base_image
from deploystack.plan.dbc import OFFSITE_NETWORK, OFFSITE_SECRET, offsite_role
from deploystack.plan.model import Build, ConfigFile, HealthCheck, Mount, Port, ProjectPlan, Service
from deploystack.plan.names import (
    DB_OFFSITE,
    ETCD_PREFIX,
    NODE_PREFIX,
    OFFSITE_SLOT_PREFIX,
    Role,
    container_name,
    network_name,
)
from deploystack.plan.names import DB_ROUTER as ROUTER
from deploystack.plan.secrets import ref
from deploystack.plan.tenancy import APPS_GROUP
from deploystack.spec.models import DBC, Stack

ETCD_MEMBERS = 3  # a quorum of two survives one lost member; five would cost two more containers
WRITE_PORT = 5432  # the router's port for the leader
READ_PORT = 5433  # the router's port for the standbys
REST_PORT = 8008  # Patroni's REST API on every node
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
# Patroni's store's network: the etcd members and the nodes, nothing else (internal: no way out either). The
# nodes are on `private` first: the router, the backup service and the offsite proxy reach them there.
DCS_NETWORK = "dcs"
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

# dbc.offsite: the nodes' server certificate (render/dbtls.py), copied by the entrypoint to where only
# postgres reads it; the proxy's rendered file; and the most WAL a slot may hold back. An offsite replica
# away for longer than this much WAL has its slot invalidated (wal_status `lost`, `db status` says so) and
# must be cloned again, rather than filling the leader's disk.
TLS_CERT, TLS_KEY = f"{CONFIG_DIR}/tls/server.crt", f"{CONFIG_DIR}/tls/server.key"
SERVER_TLS_DIR = "/run/postgresql/tls"
OFFSITE_CONFIG_DIR = "config/db-offsite"
MAX_SLOT_WAL_KEEP_SIZE = "8GB"
OFFSITE_MAXCONN = 8  # the replica's stream, its base backup and a few retries


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


def offsite_parameters(stack: Stack) -> dict[str, str]:
    """With dbc.offsite: TLS on every node (whichever leads serves the offsite replica), and a bound on the
    WAL that slots hold back. Local settings (patroni.yml), so a stack that adds dbc.offsite gets them too."""
    if stack.dbc.offsite is None:
        return {}
    return {"ssl": "on", "ssl_cert_file": f"{SERVER_TLS_DIR}/server.crt",
            "ssl_key_file": f"{SERVER_TLS_DIR}/server.key", "ssl_min_protocol_version": "TLSv1.2",
            "max_slot_wal_keep_size": MAX_SLOT_WAL_KEEP_SIZE}


def permanent_slots(stack: Stack) -> dict[str, dict[str, str]]:
    """Patroni's permanent slots (its dynamic configuration): the offsite replica's. Patroni makes it on the
    leader, and on each standby a copy it advances to the leader's position, so a new leader has it too."""
    offsite = stack.dbc.offsite
    return {offsite_role(offsite): {"type": "physical"}} if offsite is not None else {}


def replication_roles(stack: Stack) -> tuple[tuple[str, str], ...]:
    """The offsite replica's role and its password's secret: `up` makes it on the leader (plan/tenancy.py)."""
    offsite = stack.dbc.offsite
    return ((offsite_role(offsite), OFFSITE_SECRET),) if enabled(stack) and offsite is not None else ()


def planned_dynamic_config(plan: ProjectPlan) -> dict[str, object]:
    """The dynamic configuration a plan's patroni.yml bootstraps a cluster with (`bootstrap.dcs`), which `up`
    writes to etcd for a cluster made before (engine/patroni.ensure_dynamic_config)."""
    config = next((c for c in plan.configs if c.path == f"{CONFIG_DIR}/patroni.yml"), None)
    bootstrap = config.context.get("bootstrap") if config is not None else None
    dcs = bootstrap.get("dcs", {}) if isinstance(bootstrap, dict) else {}
    return dict(dcs)


def slot_changes(current: dict[str, object], wanted: dict[str, dict[str, str]]) -> list[str]:
    """`patronictl edit-config --set` values that make the dynamic `slots` hold `wanted`, and no other
    offsite slot (slots of other names are left to whoever made them)."""
    changes = [f"slots.{name}.type={slot['type']}" for name, slot in wanted.items() if name not in current]
    return changes + [f"slots.{name}=null" for name in current
                      if name.startswith(OFFSITE_SLOT_PREFIX) and name not in wanted]


def config_changes(current: Mapping[str, object], wanted: Mapping[str, object]) -> list[str]:
    """`patronictl edit-config --set` values (each value as JSON, which is YAML: a string such as "on" or
    "%m [%p]" stays a string) that make the dynamic configuration `current` hold every setting of `wanted`
    (planned_dynamic_config; its slots aside: slot_changes). A cluster keeps the dynamic configuration it
    was made with: without this, a changed `dbc.max_connections`, `synchronous` or `backups` would
    change patroni.yml and nothing that Patroni applies. Archiving settings the spec no longer wants are
    removed; other settings someone added by hand stay."""
    changes: list[str] = []

    def walk(have: Mapping[str, object], want: Mapping[str, object], path: str) -> None:
        for key, value in want.items():
            if path == "" and key == "slots":
                continue
            there = have.get(key)
            if isinstance(value, Mapping):
                walk(there if isinstance(there, Mapping) else {}, value, f"{path}{key}.")
            elif not _same(there, value):
                changes.append(f"{path}{key}={json.dumps(value)}")

    walk(current, wanted, "")
    postgresql = current.get("postgresql")
    have = postgresql.get("parameters") if isinstance(postgresql, Mapping) else None
    wanted_pg = wanted.get("postgresql")
    want = wanted_pg.get("parameters", {}) if isinstance(wanted_pg, Mapping) else {}
    if isinstance(have, Mapping):
        changes += [f"postgresql.parameters.{name}=null" for name in backups.ARCHIVE_PARAMETERS
                    if name in have and name not in want]
    return changes


def _same(have: object, want: object) -> bool:
    """Equal as PostgreSQL and Patroni read them: 100 and "100", "on" and true; absent is never equal."""
    if have is None:
        return False
    if isinstance(have, bool) or isinstance(want, bool):
        return _on(have) == _on(want)
    return str(have) == str(want)


def _on(value: object) -> bool:
    return str(value).lower() in {"true", "on"}


def offsite_proxy_host(stack: Stack) -> str:
    """The offsite proxy as a node's PostgreSQL names it: the reverse lookup of its address in Docker's DNS."""
    return f"{container_name(stack.project, DB_OFFSITE)}.{network_name(stack.project, 'private')}"


def _offsite_hba(stack: Stack) -> list[str]:
    """What comes in through the published port (the proxy's address) is the offsite role over TLS, or
    nothing: the app and replication passwords do not open the stack from outside."""
    if stack.dbc.offsite is None:
        return []
    proxy = offsite_proxy_host(stack)
    return [f"hostssl replication {offsite_role(stack.dbc.offsite)} {proxy} scram-sha-256",
            f"host replication all {proxy} reject",
            f"host all all {proxy} reject"]


def pg_hba(stack: Stack) -> list[str]:
    """Local: Patroni and `docker exec` as postgres; over the network: passwords (SCRAM) only."""
    return [
        f"local all {SUPERUSER} trust",
        "local all all scram-sha-256",
        *_offsite_hba(stack),
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
                **({"slots": permanent_slots(stack)} if dbc.offsite is not None else {}),
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
            "parameters": {"unix_socket_directories": "/run/postgresql"} | offsite_parameters(stack),
            "pg_hba": pg_hba(stack),
            # An old leader whose rewind fails clones the new leader again instead of staying down.
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
        },
        "watchdog": {"mode": "off"},  # no /dev/watchdog in a container; fencing is the leader key's TTL
    }


def router_conf(stack: Stack, offsite: bool = False) -> dict[str, object]:
    """haproxy.cfg's context: every node, checked through its Patroni REST API. `offsite`: the offsite
    proxy's, the leader only (no read port)."""
    return {
        "nodes": node_names(stack),
        "write_port": WRITE_PORT,
        "read_port": None if offsite else READ_PORT,
        "rest_port": REST_PORT,
        "inter_ms": CHECK_INTERVAL_MS,
        "fall": CHECK_FALL,
        "connect_timeout_s": CONNECT_TIMEOUT_S,
        "maxconn": OFFSITE_MAXCONN if offsite else 4 * stack.dbc.max_connections,
        # The offsite stream is never idle (keepalives both ways within 30 s): a session silent for longer is
        # a connection attempt that went nowhere during a leader change, cut so the replica tries again.
        "session_timeout": "90s" if offsite else "30m",
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
            networks=(DCS_NETWORK,),
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
            mounts=(Mount(f"{name}-data", PGDATA),), networks=("private", DCS_NETWORK),
            healthcheck=HealthCheck(test=("patroni-health",), interval_s=2, start_period_s=180),
            depends_on=tuple(etcds), config_dir=CONFIG_DIR, stop_grace_s=60,
            cap_add=h.DROP_TO_USER, mem_limit=dbc.memory, pids_limit=h.db_pids(dbc.max_connections),
        ))
    router = Service(
        name=ROUTER, role=Role.DBC,
        build=Build(role="db-router", repo="deploystack/db-router", context="build/db-router", args=base),
        healthcheck=HealthCheck(test=("db-router-health",), interval_s=2, start_period_s=180),
        # Only the first node: a node added by `scale dbc=N` must not change (and so recreate) the router.
        depends_on=(nodes[0],), config_dir=ROUTER_CONFIG_DIR,
        # A new node list (scale dbc=N) is a reload: the master re-reads the file, connections stay.
        reload=("sh", "-c", "kill -USR2 1"),
        cap_add=(h.SETUID, h.SETGID), read_only=True, tmpfs=(h.RUN, h.TMP), mem_limit="256m",
        pids_limit=h.PIDS,
    )
    services.append(router)
    offsite_configs = []
    if dbc.offsite is not None:
        # Its own container, so that the nodes tell its connections from the apps' (pg_hba, by name), on
        # the `offsite` network, where Docker publishes the port (`private` is internal).
        services.append(replace(router, name=DB_OFFSITE, config_dir=OFFSITE_CONFIG_DIR, mem_limit="64m",
                                networks=(OFFSITE_NETWORK, "private"),
                                ports=(Port(dbc.offsite.bind, dbc.offsite.port, WRITE_PORT),)))
        offsite_configs.append(ConfigFile(f"{OFFSITE_CONFIG_DIR}/haproxy.cfg", "db-router/templates/haproxy.cfg.j2",
                                          router_conf(stack, offsite=True)))
    backup_services, backup_configs = backups.plan_backups(stack, base)
    services += backup_services
    configs = [
        ConfigFile(f"{CONFIG_DIR}/patroni.yml", "", patroni_config(stack), yaml=True),
        ConfigFile(f"{ROUTER_CONFIG_DIR}/haproxy.cfg", "db-router/templates/haproxy.cfg.j2", router_conf(stack)),
        *offsite_configs,
        *backup_configs,
    ]
    return services, [m.source for s in services for m in s.mounts], configs


def members(stack: Stack) -> int:
    """How many places the etcd members and the nodes need (a swarm's `deploystack.db-member-K` labels):
    etcd-K and db-node-K share place K, so that losing one loses one etcd member and one node at most."""
    return max(ETCD_MEMBERS, stack.dbc.replicas + 1)


def member_number(service: str) -> int | None:
    """K of etcd-K or db-node-K (the place it is pinned to on a swarm); None for any other service."""
    for prefix in (ETCD_PREFIX, NODE_PREFIX):
        number = service.removeprefix(prefix)
        if service.startswith(prefix) and number.isdigit():
            return int(number)
    return None
