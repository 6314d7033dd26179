"""A Patroni DBC (`dbc.ha: patroni`) as Patroni sees it, and its switchover: everything through Patroni's own
REST API and patronictl, run inside a node's container (the API is on the private network only)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import docker
from docker.models.containers import Container

from deploystack.dbparse import Node, Slot, offsite_status
from deploystack.engine.client import engine_errors
from deploystack.engine.db import REPLICATION_SQL, SLOTS_SQL, container_state, db_containers, psql
from deploystack.engine.report import Reporter
from deploystack.errors import DeployError, StackError, UsageError
from deploystack.plan.names import NODE_PREFIX
from deploystack.plan.patroni import REST_PORT, config_changes, slot_changes

CONFIG = "/etc/deploystack/patroni.yml"
# GET /cluster from inside a node: the image has Python (Patroni's) but no curl.
CLUSTER = ["python3", "-c", "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
           f"'http://127.0.0.1:{REST_PORT}/cluster', timeout=5).read().decode())"]
# GET /config: the dynamic configuration, as JSON (patronictl show-config prints YAML).
DYNAMIC_CONFIG = [*CLUSTER[:2], CLUSTER[2].replace("/cluster", "/config")]
SWITCHOVER_WAIT_S = 60.0
STREAMING_WAIT_S = 300.0  # a replaced node: Patroni starts, PostgreSQL replays from the leader


@dataclass(frozen=True)
class Member:
    service: str
    state: str  # the container's state and health
    role: str | None  # Patroni's: leader, sync_standby, replica (None: not in the cluster)
    patroni_state: str | None  # running, streaming, starting, stopped...
    timeline: int | None
    lag_bytes: int | None  # behind the leader; None on the leader or when Patroni does not know
    host: str | None


@dataclass(frozen=True)
class ClusterStatus:
    project: str
    leader: str | None
    members: list[Member]
    asked: str | None  # the node whose REST API answered
    error: str | None = None  # why no node answered
    offsite: Node | None = None  # dbc.offsite: the replica as the leader sees it
    offsite_slot: Slot | None = None  # and its slot there (wal_status, WAL it holds back)

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"project": self.project, "leader": self.leader, "asked": self.asked,
                                 "error": self.error, "members": [asdict(m) for m in self.members]}
        if self.offsite is not None:
            slot = self.offsite_slot
            found["offsite"] = asdict(self.offsite) | {"wal_status": slot.wal_status if slot else None,
                                                       "retained_bytes": slot.retained_bytes if slot else None}
        return found


def _exec(node: Container, command: list[str], doing: str) -> tuple[int, str, str]:
    with engine_errors(doing):
        code, (out, err) = node.exec_run(command, demux=True)
    return int(code), (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")


def _running(containers: dict[str, Container], services: Sequence[str]) -> list[Container]:
    return [containers[s] for s in services if s in containers and containers[s].status == "running"]


def cluster(client: docker.DockerClient, nodes: Sequence[Container]) -> tuple[dict[str, Any], str] | None:
    """Patroni's /cluster from the first node that answers, and that node's container name."""
    for node in nodes:
        try:
            code, out, _ = _exec(node, CLUSTER, f"asking {node.name}'s Patroni")
        except DeployError:
            continue
        if code == 0:
            try:
                return dict(json.loads(out)), node.name
            except ValueError:
                continue
    return None


def _lag(value: object) -> int | None:
    return value if isinstance(value, int) else None


def status(client: docker.DockerClient, project: str, services: Sequence[str],
           offsite: str | None = None) -> ClusterStatus:
    """Every wanted node (and any other db-node container of the project) with Patroni's view of it; and the
    offsite replica `offsite` (its slot name), as the leader sees it."""
    containers = {name: c for name, c in db_containers(client, project).items() if name.startswith(NODE_PREFIX)}
    names = list(services) + sorted(set(containers) - set(services))
    found = cluster(client, _running(containers, names))
    members: dict[str, dict[str, Any]] = {}
    if found is not None:
        members = {str(m.get("name")): m for m in found[0].get("members", [])}
    leader = next((name for name, m in members.items() if m.get("role") == "leader"), None)
    result = []
    for name in names:
        container = containers.get(name)
        m = members.get(name)
        result.append(Member(
            service=name, state=container_state(container) if container is not None else "missing",
            role=str(m["role"]) if m else None, patroni_state=str(m.get("state")) if m else None,
            timeline=m.get("timeline") if m else None,
            lag_bytes=None if m is None or name == leader else _lag(m.get("lag")),
            host=str(m.get("host")) if m else None,
        ))
    away: tuple[Node | None, Slot | None] = (None, None)
    if offsite is not None:
        leading = containers.get(leader) if leader is not None else None
        replication = slots = None
        if leading is not None and leading.status == "running":
            replication, _ = psql(client, leading, REPLICATION_SQL)
            slots, _ = psql(client, leading, SLOTS_SQL)
        away = offsite_status(offsite, replication, slots)
    return ClusterStatus(project, leader, result, found[1] if found else None,
                         None if found else "no node's Patroni answered (is the stack up?)", *away)


def change_leader(client: docker.DockerClient, project: str, services: Sequence[str], candidate: str | None,
                  failover: bool, report: Reporter) -> str:
    """Patroni's switchover (the leader hands over cleanly: no acknowledged write is lost) or, with
    `failover`, its manual failover (promote `candidate` whatever the leader's state). Returns the new
    leader once Patroni reports it running."""
    if candidate is not None and candidate not in services:
        raise UsageError(f"{candidate!r} is not a node of this stack (nodes: {', '.join(services)})")
    before = status(client, project, services)
    if before.asked is None:
        raise StackError(f"cannot change the leader: {before.error}")
    if failover and candidate is None:
        raise UsageError("a failover needs the node to promote: --to NODE")
    if not failover and before.leader is None:
        raise StackError("no leader to hand over from: Patroni fails over by itself when the leader is lost "
                         "(`db promote NODE` forces it)")
    if candidate is not None and candidate == before.leader:
        raise UsageError(f"{candidate} leads already")
    node = db_containers(client, project)[next(m.service for m in before.members if m.role is not None
                                               and m.patroni_state in ("running", "streaming"))]
    command = ["patronictl", "-c", CONFIG, "failover" if failover else "switchover", "--force"]
    command += ["--candidate", candidate] if candidate else []
    command += ["--leader", before.leader] if before.leader and not failover else []
    what = "failover" if failover else "switchover"
    report.step(f"{what} from {before.leader or 'no leader'} to {candidate or 'the best standby'}")
    code, out, err = _exec(node, command, f"running patronictl {what}")
    # patronictl exits 0 also when Patroni refused ("Switchover failed, details: 412, ..."): read its words.
    if code != 0 or "Successfully" not in out:
        lines = (err + out).strip().splitlines()
        raise StackError(f"patronictl {what} failed: {lines[-1] if lines else f'exit code {code}'}")
    deadline = time.monotonic() + SWITCHOVER_WAIT_S
    while True:
        now = status(client, project, services)
        leader = next((m for m in now.members if m.role == "leader"), None)
        if leader is not None and leader.service != before.leader and leader.patroni_state == "running":
            report.step(f"{leader.service} leads (timeline {leader.timeline})")
            return leader.service
        if time.monotonic() > deadline:
            raise StackError(f"{what} asked, but no new leader after {SWITCHOVER_WAIT_S:.0f}s "
                             f"(leader: {leader.service if leader else 'none'})")
        time.sleep(0.5)


def wait_streaming(client: docker.DockerClient, project: str, services: Sequence[str], node: str, report: Reporter,
                   timeout: float = STREAMING_WAIT_S) -> None:
    """Wait until Patroni reports `node` a standby streaming from the leader (a node replaced in a rolling
    replacement serves again before the next one goes)."""
    deadline = time.monotonic() + timeout
    while True:
        now = status(client, project, services)
        member = next((m for m in now.members if m.service == node), None)
        if member is not None and member.role != "leader" and member.patroni_state == "streaming":
            report.step(f"{node} streams from {now.leader}")
            return
        if time.monotonic() > deadline:
            state = member.patroni_state if member is not None else "missing"
            raise StackError(f"{node} was replaced but is not streaming after {timeout:.0f}s (Patroni: {state}); "
                             "the other nodes were left as they are: see `deploystack db status`")
        time.sleep(1.0)


def ensure_dynamic_config(client: docker.DockerClient, project: str, services: Sequence[str],
                          wanted: dict[str, object], report: Reporter) -> None:
    """Patroni's dynamic configuration (in etcd) made to hold `wanted` (plan/patroni.planned_dynamic_config):
    the settings a cluster was bootstrapped with do not follow the spec by themselves (config_changes), and
    the permanent `offsite_*` slots are added or dropped (Patroni then drops a slot on every node, and the
    WAL it held goes). A setting PostgreSQL reads only at start waits for the nodes' next restart: `up`
    replaces them one at a time when patroni.yml changed, which such a change does."""
    slots = wanted.get("slots")
    wanted_slots = dict(slots) if isinstance(slots, dict) else {}
    current: dict[str, object] | None = None
    why = "no Patroni node runs"
    for node in _running(db_containers(client, project), services):
        code, out, err = _exec(node, DYNAMIC_CONFIG, f"reading {node.name}'s Patroni configuration")
        try:
            loaded = json.loads(out) if code == 0 else None
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            current = loaded
            break
        why = f"{node.name}: {(err or out).strip()[-300:]}"
    if current is None:
        if wanted_slots:
            raise StackError(f"Patroni's configuration could not be read, so the offsite slot is not set ({why})")
        report.step(f"Patroni's configuration could not be read ({why}); the next `up` applies the spec's settings")
        return
    have_slots = current.get("slots")
    changes = config_changes(current, wanted) + slot_changes(dict(have_slots) if isinstance(have_slots, dict)
                                                             else {}, wanted_slots)
    if not changes:
        return
    report.step(f"Patroni's dynamic configuration: {', '.join(changes)}")
    command = ["patronictl", "-c", CONFIG, "edit-config", "--force", "--quiet"]
    code, out, err = _exec(node, [*command, *(arg for change in changes for arg in ("--set", change))],
                           "setting Patroni's dynamic configuration")
    if code != 0:
        lines = (err + out).strip().splitlines()
        raise StackError(f"patronictl edit-config failed: {lines[-1] if lines else f'exit code {code}'}")
