"""A stack on a three-node swarm, deployed from this machine through DOCKER_HOST, losing a node under load.

The nodes are Docker-in-Docker containers (scripts/cluster.sh); the edge node (node 1) publishes the LBC's
ports on 127.0.0.1, the database is placed on node 2 by label, the backend's replicas spread over all three.
Node 3 runs a replica and neither the edge nor the database: it is the one killed (SIGKILL to its container,
as a machine that loses power), while a client sends requests through the LBC.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import docker.errors
import pytest
import requests
import urllib3

from deploystack.engine.client import EngineAddress, client_for
from tests.cluster.cluster import NODES, Cluster, add_node, host_swarm_state, remove_node
from tests.cluster.conftest import APP_REPLICAS, Deployed
from tests.conftest import eventually

pytestmark = pytest.mark.docker
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

LOAD_MAX_S = 90.0  # the request loop's bound, whatever happens
REQUEST_TIMEOUT_S = 5.0


def test_doctor_checks_the_engine_named_by_docker_host(deployed: Deployed, monkeypatch: pytest.MonkeyPatch) -> None:
    # the system's CAs in requests' variable, as on many machines: the engine's own CA must still be the one used
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    out = deployed.cli("doctor", check=False).stdout
    assert "ok    engine " in out, out
    assert f"at {deployed.cluster.docker_host} (DOCKER_HOST)" in out, out


def test_the_remote_engine_answers_only_a_client_with_the_clusters_certificate(cluster: Cluster) -> None:
    """What holds the swarm is not open on its port: plain HTTP and TLS without a client certificate are
    refused; the certificate deploystack was given (DOCKER_CERT_PATH) is let in."""
    plain = EngineAddress(cluster.docker_host, "plain HTTP")
    for address in (plain, cluster.address(client_certificate=False)):
        with pytest.raises((docker.errors.DockerException, requests.exceptions.RequestException)):
            client_for(address, timeout=10).ping()
    assert client_for(cluster.address(), timeout=10).ping()


def test_the_swarm_spans_the_nodes_and_the_host_engine_is_in_none(
        cluster: Cluster, host_engine: docker.DockerClient) -> None:
    nodes = cluster.manager.nodes.list()
    assert len(nodes) == NODES
    assert all(n.attrs["Status"]["State"] == "ready" and n.attrs["ManagerStatus"]["Reachability"] == "reachable"
               for n in nodes)
    assert host_swarm_state(host_engine) == "inactive"


def test_images_came_through_the_registry_built_on_this_machine(deployed: Deployed,
                                                                 host_engine: docker.DockerClient) -> None:
    services = deployed.cluster.manager.services.list(
        filters={"label": f"com.docker.stack.namespace={deployed.project}"})
    images = {s.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] for s in services}
    assert images and all(image.startswith(deployed.cluster.registry + "/") for image in images), images
    backend = next(i for i in images if f"/{deployed.project}/backend:" in i)
    # One lookup by name: listing every image races with e2e tests removing theirs beside this run.
    try:
        host_engine.images.get(backend)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{backend} was not built here")


def test_replicas_on_several_nodes_serve_through_the_edge(deployed: Deployed) -> None:
    placed = Counter(deployed.served_by("backend").values())
    assert len(placed) == NODES, f"the replicas are not spread over the nodes: {placed}"
    db_nodes = {deployed.node_names()[t["NodeID"]] for t in deployed.tasks("db-primary")}
    assert db_nodes == {deployed.cluster.node(2)}, "the database is not on the node labelled for it"
    lbc_nodes = {deployed.node_names()[t["NodeID"]] for t in deployed.tasks("lbc")}
    assert lbc_nodes == {deployed.cluster.node(1)}, "the LBC is not (only) on the edge node"

    where = deployed.served_by("backend")
    seen = Counter()
    for _ in range(30):
        response = deployed.get("/api/health/")
        assert response.status_code == 200 and response.json()["app"] == "backend"
        seen[where[response.headers["X-Served-By"]]] += 1
    assert len(seen) >= 2, f"every request was served on one node: {seen}"


def test_ps_shows_each_task_and_the_node_it_runs_on(deployed: Deployed) -> None:
    rows = json.loads(deployed.cli("ps", "--engine", "swarm", "--json").stdout)
    backend = [r for r in rows if r["service"] == "backend"]
    assert len(backend) == APP_REPLICAS and {r["state"] for r in backend} == {"running"}, backend
    assert sorted(r["node"] for r in backend) == sorted(deployed.served_by("backend").values())
    assert [r["node"] for r in rows if r["service"] == "db-primary"] == [deployed.cluster.node(2)]
    assert [r["state"] for r in rows if r["service"] == "backend-migrate"] == ["complete"]
    assert "db-provision" not in {r["service"] for r in rows}
    table = deployed.cli("ps", "--engine", "swarm").stdout
    assert "backend-migrate" in table and "complete" in table


def test_a_node_without_the_image_pulls_it_from_the_registry(deployed: Deployed) -> None:
    """The registry's copy of the backend image taken off every node: new tasks start only by pulling it."""
    (image,) = {t["Spec"]["ContainerSpec"]["Image"] for t in deployed.tasks("backend")}
    nodes = [deployed.cluster.node(n) for n in range(1, NODES + 1)]
    before = {t["ID"] for t in deployed.tasks("backend")}
    for node in nodes:
        deployed.node_docker(node, "image", "rm", "--force", image.split("@")[0])
        assert deployed.node_docker(node, "image", "inspect", image.split("@")[0])[0] != 0
    deployed.docker.services.get(f"{deployed.project}_backend").force_update()

    def replaced() -> bool:
        running = {t["ID"] for t in deployed.tasks("backend")}
        return len(running) == APP_REPLICAS and not running & before

    eventually(replaced, f"{APP_REPLICAS} new backend tasks running", 180)
    pulled = [node for node in nodes if deployed.node_docker(node, "image", "inspect", image.split("@")[0])[0] == 0]
    assert len(pulled) >= 2, f"the image was pulled back on {pulled} only"
    assert deployed.get("/api/health/").json()["app"] == "backend"


def test_the_apps_roles_are_made_on_a_primary_that_runs_on_another_node(deployed: Deployed) -> None:
    """`up` drives node 1; the primary runs on node 2, where it cannot `docker exec`: the provisioning job
    on the private network made the app's own role and database there, and the app writes with them."""
    (primary,) = deployed.tasks("db-primary")
    assert deployed.node_names()[primary["NodeID"]] == deployed.cluster.node(2)
    assert deployed.cluster.manager.info()["Name"] == deployed.cluster.node(1)
    psql = ["psql", "-X", "-U", "postgres", "-d", "postgres", "-tAc"]
    roles = deployed.exec("db-primary", [*psql, "SELECT rolname, rolsuper, rolcanlogin FROM pg_roles "
                                                "WHERE rolname = 'backend'"])
    assert roles == (0, "backend|f|t\n"), roles
    owner = deployed.exec("db-primary", [*psql, "SELECT pg_get_userbyid(datdba) FROM pg_database "
                                                "WHERE datname = 'backend'"])
    assert owner == (0, "backend\n"), owner
    migrations = deployed.cluster.manager.api.tasks(filters={"service": f"{deployed.project}_backend-migrate"})
    assert "complete" in {t["Status"]["State"] for t in migrations}, [t["Status"] for t in migrations]
    created = requests.post(deployed.https + "/api/notes/",
                            json={"text": "on node 2"}, verify=False, timeout=10)
    assert created.status_code == 201, created.text
    # The job is gone once done.
    services = deployed.cluster.manager.services.list(
        filters={"label": f"com.docker.stack.namespace={deployed.project}"})
    assert f"{deployed.project}_db-provision" not in {s.name for s in services}


@dataclass
class Load:
    """GETs one after the other through the LBC until stopped (or max_s): failures and the longest
    time without a successful answer."""

    deployed: Deployed
    max_s: float = LOAD_MAX_S
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    longest_gap_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = last_ok = time.monotonic()
        while not self.stop.is_set() and time.monotonic() - started < self.max_s:
            try:
                response = self.deployed.get("/api/health/", timeout=REQUEST_TIMEOUT_S)
                good = response.status_code == 200
                why = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                good, why = False, type(exc).__name__
            now = time.monotonic()
            if good:
                self.ok += 1
                self.longest_gap_s = max(self.longest_gap_s, now - last_ok)
                last_ok = now
            else:
                self.failed.append(why)
            time.sleep(0.05)
        self.longest_gap_s = max(self.longest_gap_s, time.monotonic() - last_ok)


def under_load(deployed: Deployed, action: Callable[[], None], max_s: float = LOAD_MAX_S) -> Load:
    """Run `action` while a client sends requests through the LBC (and for 3 s after; max_s at most)."""
    load = Load(deployed, max_s)
    client = threading.Thread(target=load.run)
    client.start()
    try:
        time.sleep(2)  # answers before
        action()
        time.sleep(3)
    finally:
        load.stop.set()
        client.join()
    return load


def report(what: str, load: Load) -> None:
    print(f"\n{what}: {load.ok} requests answered, {len(load.failed)} failed {dict(Counter(load.failed))}, "
          f"longest gap {load.longest_gap_s:.2f}s")


def test_scale_across_nodes_under_load_fails_no_request(deployed: Deployed) -> None:
    def scale() -> None:
        deployed.cli("scale", f"backend={APP_REPLICAS + 1}", "--engine", "swarm")
        assert len(deployed.tasks("backend")) == APP_REPLICAS + 1
        deployed.cli("scale", f"backend={APP_REPLICAS}", "--engine", "swarm")

    load = under_load(deployed, scale)
    report("scale up and down", load)
    assert not load.failed and load.ok > 20
    assert len(set(deployed.served_by("backend").values())) == NODES


def set_availability(cluster: Cluster, node: str, availability: str) -> None:
    (found,) = [n for n in cluster.manager.nodes.list() if n.attrs["Description"]["Hostname"] == node]
    found.update({**found.attrs["Spec"], "Availability": availability})


def test_drain_a_node_then_rebalance_onto_it_under_load_fails_no_request(deployed: Deployed) -> None:
    """`docker node update --availability drain`, back to active, then `docker service update --force`: a
    returning node gets nothing until an update rebalances, and both move replicas without a failure."""
    node = deployed.cluster.node(3)

    def drain_and_rebalance() -> None:
        set_availability(deployed.cluster, node, "drain")
        eventually(lambda: len(running := deployed.served_by("backend")) == APP_REPLICAS
                   and node not in running.values(), f"the replicas moved off {node}", 120)
        set_availability(deployed.cluster, node, "active")
        deployed.cluster.manager.services.get(f"{deployed.project}_backend").force_update()

        def rebalanced() -> bool:
            service = deployed.cluster.manager.services.get(f"{deployed.project}_backend")
            state = (service.attrs.get("UpdateStatus") or {}).get("State")
            placed = sorted(deployed.served_by("backend").values())
            assert state == "completed" and len(placed) == APP_REPLICAS and node in placed, (state, placed)
            return True

        eventually(rebalanced, f"an update rebalanced the replicas onto {node}", 180)

    load = under_load(deployed, drain_and_rebalance)
    report("drain, return, rebalance", load)
    assert not load.failed and load.ok > 20


def test_a_node_added_takes_a_replica_then_leaves_drained_under_load_fails_no_request(deployed: Deployed) -> None:
    """docs/swarm.md's "Add a node", then retiring it: a worker joins with no label; a scale up puts the new
    replica on it (the apps spread over nodes) and it serves; then it is drained (its replica starts
    elsewhere first), leaves the swarm and is removed."""
    cluster = deployed.cluster
    new = add_node(cluster)
    joined = True
    try:
        def scale_onto_it() -> None:
            deployed.cli("scale", f"backend={APP_REPLICAS + 1}", "--engine", "swarm")
            eventually(lambda: new in deployed.served_by("backend").values(), f"a backend replica on {new}", 120)

        load, took = timed_under_load(deployed, scale_onto_it)
        report(f"a node joined, scale onto it in {took:.1f}s", load)
        assert not load.failed and load.ok > 20
        on_new = {host for host, node in deployed.served_by("backend").items() if node == new}
        assert answered_by(deployed, on_new), f"the replicas on {new} ({on_new}) answered none of 60 requests"

        def retire() -> None:
            remove_node(cluster, new)
            eventually(lambda: len(deployed.served_by("backend")) == APP_REPLICAS + 1,
                       f"{APP_REPLICAS + 1} replicas running on the other nodes", 120)

        load, took = timed_under_load(deployed, retire)
        joined = False
        report(f"drain, leave, remove in {took:.1f}s", load)
        assert not load.failed and load.ok > 20
        assert new not in {n.attrs["Description"]["Hostname"] for n in cluster.manager.nodes.list()}
    finally:
        if joined:
            remove_node(cluster, new)
        deployed.cli("scale", f"backend={APP_REPLICAS}", "--engine", "swarm")


def timed_under_load(deployed: Deployed, action: Callable[[], None]) -> tuple[Load, float]:
    """under_load with a longer bound (a new node pulls the image first: 52-59 s measured), and how long
    `action` took; it must end within the bound, or what failed after the loop stopped would go unseen."""
    bound_s, took = 240.0, list[float]()

    def timed() -> None:
        started = time.monotonic()
        action()
        took.append(time.monotonic() - started)

    load = under_load(deployed, timed, bound_s)
    assert took[0] + 5 < bound_s, f"the action took {took[0]:.0f}s, past the request loop's {bound_s:.0f}s"
    return load, took[0]


def answered_by(deployed: Deployed, hosts: set[str], tries: int = 60) -> bool:
    """Whether a GET through the LBC reaches one of the replicas `hosts` (X-Served-By) within `tries`."""
    return any(deployed.get("/api/health/").headers.get("X-Served-By") in hosts for _ in range(tries))


def test_losing_a_node_under_load(deployed: Deployed, host_engine: docker.DockerClient) -> None:
    victim = deployed.cluster.node(3)
    before = deployed.served_by("backend")
    assert victim in before.values(), f"no backend replica on {victim}: {before}"
    recovered_s: list[float] = []

    def kill() -> None:
        host_engine.containers.get(victim).kill(signal="KILL")
        killed_at = time.monotonic()

        def rescheduled() -> bool:
            running = deployed.served_by("backend")
            return len(running) == APP_REPLICAS and victim not in running.values()

        eventually(rescheduled, f"{APP_REPLICAS} backend replicas running without {victim}", 120)
        recovered_s.append(time.monotonic() - killed_at)

    load = under_load(deployed, kill)
    report(f"node loss (replicas rescheduled after {recovered_s[0]:.1f}s)", load)
    states = {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"]
              for n in deployed.cluster.manager.nodes.list()}
    assert states[victim] == "down"
    assert load.ok > 20
    assert len(load.failed) <= 3, f"failed requests: {Counter(load.failed)}"
    assert load.longest_gap_s < 2 * REQUEST_TIMEOUT_S
    assert deployed.get("/api/health/").status_code == 200
