"""Every name derived from a project or a service, in one place: containers, networks, volumes, database
replicas and their replication slots, and the roles services play. Other modules call these; none
rebuilds a name from a string. Imports nothing of deploystack, so the spec's models may use it too.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Role(StrEnum):
    """What a service is: the `role` of a plan's Service and the `io.deploystack.role` label. A StrEnum,
    so a role prints, dumps and compares as its value."""

    LBC = "lbc"
    APC = "apc"
    APC_WORKER = "apc-worker"
    APC_JOB = "apc-job"  # an app's one-shot migrate job
    ACC = "acc"
    MMC = "mmc"
    DBC = "dbc"
    CDC = "cdc"  # the webhook receiver
    CDC_RUNNER = "cdc-runner"  # the deploy runner


PRIMARY = "db-primary"
REPLICA_PREFIX = "db-replica-"
NODE_PREFIX = "db-node-"  # dbc.ha: patroni: the members, db-node-1..N
DB_ROUTER = "db-router"  # dbc.ha: patroni: the HAProxy the apps reach
DB_OFFSITE = "db-offsite"  # dbc.ha: patroni with dbc.offsite: the HAProxy the offsite replica reaches the leader by
ETCD_PREFIX = "etcd-"  # dbc.ha: patroni: Patroni's store, etcd-1..3
OFFSITE_SLOT_PREFIX = "offsite_"  # the offsite replica's role and slot: offsite_<dbc.offsite.name>
SLOT_PREFIX = "replica_"  # a replica's replication slot, and its Django alias: db-replica-1 -> replica_1


def project_scoped(project: str, name: str) -> str:
    """A network's, a volume's or a swarm service's engine name: Compose's `<project>_<name>`."""
    return f"{project}_{name}"


network_name = volume_name = service_name = project_scoped


def unscoped(project: str, scoped: str) -> str:
    """The inverse of project_scoped: `<project>_lbc` -> `lbc` (other names are returned as they are)."""
    return scoped.removeprefix(f"{project}_")


def container_name(project: str, service: str, number: int = 1) -> str:
    """Compose v2's container name for replica `number` of `service`: `<project>-<service>-<n>`."""
    return f"{project}-{service}-{number}"


def data_volume(service: str) -> str:
    """The data volume of a stateful service (the database's nodes): `<service>-data`."""
    return f"{service}-data"


def replica_name(number: int) -> str:
    return f"{REPLICA_PREFIX}{number}"


def replica_names(count: int) -> list[str]:
    return [replica_name(n) for n in range(1, count + 1)]


def is_replica(name: str) -> bool:
    """Whether `name` is a database replica's service name (db-replica-<n>)."""
    return name.startswith(REPLICA_PREFIX)


def slot_name(replica: str) -> str:
    """A replica's replication slot (and the Django alias that reads from it): db-replica-1 -> replica_1."""
    return SLOT_PREFIX + replica.removeprefix(REPLICA_PREFIX)


def replica_of_alias(alias: str) -> str:
    """The inverse of slot_name: replica_1 -> db-replica-1 (other strings are returned unchanged)."""
    return REPLICA_PREFIX + alias.removeprefix(SLOT_PREFIX) if alias.startswith(SLOT_PREFIX) else alias


def replica_of_volume(project: str, volume: str, prefix: str = REPLICA_PREFIX) -> str | None:
    """The replica whose data volume `volume` is (`<project>_db-replica-<n>-data`), else None.
    `prefix`: the numbered services' name (`db-node-` for Patroni's members)."""
    match = re.fullmatch(rf"{re.escape(project)}_({re.escape(prefix)}\d+)-data", volume)
    return match.group(1) if match else None
