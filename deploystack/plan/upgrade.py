"""`deploystack db upgrade`, the pure part: a PostgreSQL 15 stack (`db-primary`, `db-replica-N`) moved to
Patroni and PostgreSQL 17 (`dbc.ha: patroni`) by dump and restore (docs/db.md says why not pg_upgrade).

What the engine (engine/upgrade.py) needs to know without Docker: whether a project's volumes still hold
the old layout only, the steps it shows before it asks, the roles' script made fit for the new cluster,
and the comparison of row counts before and after.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from deploystack.plan.names import DB_ROUTER, NODE_PREFIX, PRIMARY, data_volume, replica_names, volume_name
from deploystack.plan.patroni import REPLICATION_USER, SUPERUSER, etcd_names, node_names
from deploystack.spec.models import Stack

OLD_MAJOR, NEW_MAJOR = 15, 17
# Patroni makes these roles itself when it bootstraps the cluster, with the passwords of its own
# environment: the old cluster's attributes and password hashes for them are not carried over.
PATRONI_ROLES = frozenset({SUPERUSER, REPLICATION_USER})
# `CREATE ROLE name;` and `ALTER ROLE name ...` as pg_dumpall writes them (one statement a line; the name
# quoted by fmtId when it is not a plain lower-case identifier).
_ROLE_STATEMENT = re.compile(r'^(CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)[ ;]')

Counts = Mapping[str, Mapping[str, int]]  # database -> "schema.table" -> rows


def old_volume(project: str) -> str:
    """The engine name of the PostgreSQL 15 primary's data volume."""
    return volume_name(project, data_volume(PRIMARY))


def node_volume_prefix(project: str) -> str:
    return volume_name(project, NODE_PREFIX)


def pending(project: str, volumes: Iterable[str]) -> bool:
    """The project's data is still on the PostgreSQL 15 primary's volume, and no Patroni node has a volume
    yet: `up` with `ha: patroni` would start an empty cluster beside it."""
    names = set(volumes)
    prefix = node_volume_prefix(project)
    return old_volume(project) in names and not any(name.startswith(prefix) for name in names)


def pending_message(project: str) -> str:
    return (f"dbc.ha is patroni, but the data of project {project} is still on PostgreSQL {OLD_MAJOR} "
            f"(volume {old_volume(project)}): run `deploystack db upgrade` to move it to Patroni and "
            f"PostgreSQL {NEW_MAJOR} (or remove `ha: patroni` from the spec to keep it as it is)")


def swarm_pending_message(project: str) -> str:
    return (f"dbc.ha is patroni, but the swarm stack {project} runs PostgreSQL {OLD_MAJOR} (its db-primary "
            f"service): deploying would start an empty Patroni cluster beside that data. `deploystack db "
            f"upgrade` works on Compose stacks only for now; on a swarm, keep the spec without `ha: patroni` "
            f"(docs/db.md, \"On a swarm\")")


def nothing_message(project: str) -> str:
    return (f"nothing to upgrade: project {project} has no PostgreSQL {OLD_MAJOR} volume ({old_volume(project)}), "
            f"or its Patroni nodes have volumes already ({node_volume_prefix(project)}*)")


def old_services(stack: Stack) -> list[str]:
    """The old layout's database services (their volumes are kept)."""
    return [PRIMARY, *replica_names(stack.dbc.replicas)]


def new_services(stack: Stack) -> list[str]:
    return [*etcd_names(), *node_names(stack), DB_ROUTER]


def steps(stack: Stack, writers: Iterable[str], old: Iterable[str], folder: str) -> list[str]:
    """What `db upgrade` will do, in order, for the user to read before saying yes."""
    old = list(old)
    return [
        f"stop the containers that write to the database: {', '.join(writers) or 'none running'}",
        f"count the rows of every table, then dump the roles (pg_dumpall --globals-only) and every database "
        f"(pg_dump -Fc, one file each) from {PRIMARY} (PostgreSQL {OLD_MAJOR}) into {folder}",
        f"stop {', '.join(old)}: their containers and volumes stay as they are",
        f"start {', '.join(new_services(stack))}: PostgreSQL {NEW_MAJOR} under Patroni, in new volumes",
        "restore the roles and databases on the leader, count the rows again: every table must match",
        f"`up` with ha: patroni: the apps connect through {DB_ROUTER}; {', '.join(old)} are removed, "
        "their volumes kept",
    ]


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def restorable_globals(sql: str, existing_roles: Iterable[str]) -> str:
    """pg_dumpall --globals-only's script, fit for the new cluster: no `CREATE ROLE` of a role the cluster
    already has (psql would stop there), and nothing of Patroni's own roles (`postgres`, `replicator`),
    whose passwords are Patroni's. Everything else (the apps' roles, their password hashes and
    memberships, roles made by hand) is kept as it was."""
    existing = set(existing_roles)
    kept = []
    for line in sql.splitlines():
        match = _ROLE_STATEMENT.match(line)
        if match is not None:
            verb, name = match.group(1), _unquote(match.group(2))
            if (verb == "CREATE" and name in existing) or name in PATRONI_ROLES:
                continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def mismatches(before: Counts, after: Counts) -> list[str]:
    """Every table whose row count differs after the restore (or is missing), as `db.table: x -> y`."""
    found = []
    for database, tables in sorted(before.items()):
        now = after.get(database, {})
        for table, rows in sorted(tables.items()):
            if now.get(table) != rows:
                found.append(f"{database}.{table}: {rows} -> {now.get(table, 'missing')}")
    return found


def total_rows(counts: Counts) -> tuple[int, int]:
    """(tables, rows) of a count."""
    return sum(len(t) for t in counts.values()), sum(sum(t.values()) for t in counts.values())


def old_volumes_of(project: str, volumes: Iterable[str]) -> list[str]:
    """The old layout's data volumes among a project's volumes (the primary's, the replicas')."""
    pattern = re.compile(rf"{re.escape(project)}_(db-primary|db-replica-\d+)-data")
    return sorted(v for v in volumes if pattern.fullmatch(v))


def removal_note(old: Iterable[str], folder: str) -> str:
    volumes = " ".join(old)
    return (f"the PostgreSQL {OLD_MAJOR} volumes are kept: once you no longer want them, "
            f"`docker volume rm {volumes}`; the dumps are in {folder} (they hold every row: keep them private "
            "or delete them)")
