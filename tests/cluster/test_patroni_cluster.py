"""A Patroni stack (`dbc.ha: patroni`, synchronous) on the three-node swarm, deployed from this machine through
DOCKER_HOST, losing the node of the Patroni leader under write load.

The cluster's labels (scripts/cluster.sh) put etcd-1 and db-node-1 on node 2, etcd-2 and db-node-2 on node 3,
etcd-3 on node 1 (the edge and the manager deploystack drives). The leader's node is killed (SIGKILL to its
container, as a machine that loses power) while a client POSTs notes through the edge node's port: with no
command run, the other node is promoted and writes come back within 30 s, and every acknowledged note is
there. The node is then started again: it rejoins the swarm, and its node rejoins Patroni as a standby.
Measurements are printed (run with -s).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.cluster.cluster import Cluster, ClusterStack, deployed_stack, ready_nodes, restore_nodes, swarm_settings
from tests.conftest import BLUEPRINTS, eventually
from tests.e2e.test_patroni import OUTAGE_WINDOW_S, WriteLoad

pytestmark = pytest.mark.docker

FAILOVER_LIMIT_S = 30.0
NODES_OF = {"etcd-1": 2, "db-node-1": 2, "etcd-2": 3, "db-node-2": 3, "etcd-3": 1}  # scripts/cluster.sh's labels
PATRONI_NODES = ("db-node-1", "db-node-2")
SPEC = """\
project: {project}
apc:
  apps:
    backend:
      source: {backend}
      wsgi: backend.wsgi:application
      replicas: 2
      routes: [/api/]
acc: {{redis: false, memcached: false, rabbitmq: false}}
mmc: false
dbc: {{ha: patroni, replicas: 1, synchronous: true}}
cdc: false
swarm: {{update_delay: 3}}
"""


@pytest.fixture(scope="module")
def ha(cluster: Cluster, host_engine: docker.DockerClient,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    # An earlier module may have killed a node (tests/cluster/test_cluster.py kills node 3): all three back.
    restarted = restore_nodes(cluster, host_engine)
    if restarted:
        print(f"\nrestarted {restarted}")
    spec = tmp_path_factory.mktemp("cluster-patroni") / "deploystack.yaml"
    spec.write_text(SPEC.format(project=f"clp{secrets.token_hex(2)}",
                                backend=BLUEPRINTS / "default" / "apps" / "backend"))
    stack = ClusterStack(cluster, "", spec, host_engine)
    stack.edit_spec(lambda data: swarm_settings(data, cluster))
    started = time.monotonic()
    with deployed_stack(cluster, host_engine, spec) as deployed:
        print(f"\nup --engine swarm of the Patroni stack: {time.monotonic() - started:.0f} s")
        try:
            yield deployed
        finally:
            restore_nodes(cluster, host_engine)  # later modules get three nodes, whatever happened here


def placed(stack: ClusterStack, service: str) -> str | None:
    tasks = stack.tasks(service)
    return stack.node_names()[tasks[0]["NodeID"]] if len(tasks) == 1 else None


def routers_on(stack: ClusterStack) -> list[str]:
    """The nodes of the db-router's running tasks (two, on two nodes)."""
    names = stack.node_names()
    return sorted(names[t["NodeID"]] for t in stack.tasks("db-router"))


def patroni_cluster(stack: ClusterStack, on: str) -> dict[str, Any]:
    """Patroni's own view (GET /cluster of its REST API), asked of node `on`'s Patroni."""
    code, out = stack.exec(on, ["python3", "-c", "import urllib.request; print(urllib.request.urlopen("
                                                 "'http://127.0.0.1:8008/cluster', timeout=5).read().decode())"])
    assert code == 0, out
    found: dict[str, Any] = json.loads(out)
    return found


def roles(stack: ClusterStack, on: str) -> dict[str, tuple[str, str]]:
    """member -> (role, state)."""
    return {m["name"]: (m["role"], m["state"]) for m in patroni_cluster(stack, on)["members"]}


def healthy(stack: ClusterStack, on: str) -> dict[str, tuple[str, str]] | None:
    """Both nodes up: a leader, and a synchronous standby streaming from it."""
    found = roles(stack, on)
    ok = (set(found) == set(PATRONI_NODES) and sorted(role for role, _ in found.values()) == ["leader", "sync_standby"]
          and {state for _, state in found.values()} <= {"running", "streaming"})
    return found if ok else None


def leader_sql(stack: ClusterStack, leader: str, query: str) -> str:
    code, out = stack.exec(leader, ["psql", "-X", "-U", "postgres", "-d", "backend", "-qtAc", query])
    assert code == 0, out
    return out.strip()


def test_each_etcd_member_and_patroni_node_runs_on_the_node_labelled_for_it(ha: ClusterStack) -> None:
    for service, node in NODES_OF.items():
        eventually(lambda s=service: placed(ha, s) is not None, f"{service} running", 120)
        assert placed(ha, service) == ha.cluster.node(node), service
    eventually(lambda: len(set(routers_on(ha))) == 2, "two routers on two nodes", 120)
    routers = routers_on(ha)
    found = eventually(lambda: healthy(ha, "db-node-1"), "a leader and a synchronous standby", 120)
    # Members advertise their task's address on the overlay: the router and the standby reach them there.
    addresses = {m["name"]: m["host"] for m in patroni_cluster(ha, "db-node-1")["members"]}
    assert all(a.startswith(("10.", "172.", "192.168.")) for a in addresses.values()), addresses
    assert ha.get("/api/health/").status_code == 200
    doctor = ha.cli("doctor", check=False).stdout
    assert "ok    Patroni placement    3 members on 3 nodes, one each" in doctor, doctor
    print(f"\nplacement: {({s: placed(ha, s) for s in (*NODES_OF, 'backend')})}; db-router on {routers}; "
          f"Patroni: {found}")


def write_gaps(acked: list[float], start: float, end: float) -> float:
    times = [start, *sorted(acked), end]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def test_losing_the_leaders_node_under_writes_fails_over_and_loses_no_acknowledged_write(
        ha: ClusterStack, host_engine: docker.DockerClient) -> None:
    eventually(lambda: healthy(ha, "db-node-1"), "a leader and a synchronous standby", 120)
    found = roles(ha, "db-node-1")
    (leader,) = [name for name, (role, _) in found.items() if role == "leader"]
    (standby,) = [name for name in PATRONI_NODES if name != leader]
    victim = placed(ha, leader)
    assert victim in (ha.cluster.node(2), ha.cluster.node(3)), victim
    router_nodes = routers_on(ha)
    backend_nodes = sorted(ha.served_by("backend").values())

    with WriteLoad(ha, limit_s=150) as load:
        begun = time.monotonic()
        time.sleep(2)
        host_engine.containers.get(victim).kill(signal="KILL")
        killed = time.monotonic()
        failover_s = load.recovered_after(killed, timeout=OUTAGE_WINDOW_S + 15)
        time.sleep(3)
    ended = time.monotonic()
    eventually(lambda: roles(ha, standby).get(standby, ("", ""))[0] == "leader", f"{standby} leading", 60)
    acked_ids = {note for _, note in load.acked}
    present = {int(x) for x in leader_sql(ha, standby, "SELECT id FROM notes_note").split()}
    lost = sorted(acked_ids - present)
    gap = write_gaps([t for t, _ in load.acked], begun, ended)
    failed_after = sum(t > killed for t in load.failed)
    print(f"\nkilled {victim} (ran {leader}, the leader; db-router on {router_nodes}; backend on {backend_nodes}): "
          f"first acknowledged write {failover_s:.1f} s after the kill; longest write gap {gap:.1f} s; "
          f"{len(load.acked)} writes acknowledged, {len(lost)} lost, {len(load.failed)} failed requests "
          f"({failed_after} after the kill)")
    assert failover_s < FAILOVER_LIMIT_S
    assert lost == [], f"acknowledged notes missing on the new leader: {lost[:20]}"
    assert gap < FAILOVER_LIMIT_S + 5

    # The machine comes back: it rejoins the swarm, its node rejoins Patroni as the standby (rewound if it
    # must be), and the leader stays where it is.
    back = time.monotonic()
    assert restore_nodes(ha.cluster, host_engine) == [victim]
    assert len(ready_nodes(ha.cluster)) == 3
    after = eventually(lambda: healthy(ha, standby), f"{leader} streaming again from {standby}", 240)
    print(f"{victim} back in the swarm and {leader} a synchronous standby {time.monotonic() - back:.0f} s after "
          "its restart")
    assert after[standby][0] == "leader" and after[leader][0] == "sync_standby"
    assert placed(ha, leader) == victim
    reply = ha.get("/api/health/")
    assert reply.status_code == 200
