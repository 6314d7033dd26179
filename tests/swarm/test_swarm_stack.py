"""The default blueprint on the multi-node swarm (tests/swarm/conftest.py): routes through the LBC, a
service scale under load that needs no new LBC configuration, a start-first rolling update under load with
no failed request, and the database replica (node 3) streaming from the primary (node 2)."""

from __future__ import annotations

import collections
import threading
import time

import pytest
import requests

from tests.cluster.cluster import EDGE_HTTPS
from tests.cluster.cluster import ClusterStack as Stack
from tests.conftest import eventually
from tests.load import LoadLoop
from tests.swarm.conftest import tasks, wanted_tasks

pytestmark = pytest.mark.docker

SWARM = ("--engine", "swarm")


def hostnames(stack: Stack, service: str) -> set[str]:
    """The hostnames (short container ids, which the APC's nginx returns as X-Served-By) of the running tasks."""
    return stack.hostnames(service)


def served_by_all(stack: Stack, path: str, expected: set[str], deadline_s: float = 30.0) -> set[str]:
    """X-Served-By of GETs until every expected replica answered once (the LBC re-resolves every 2 s)."""
    seen: set[str] = set()
    deadline = time.monotonic() + deadline_s
    while not expected <= seen and time.monotonic() < deadline:
        seen.add(stack.get(path).headers["X-Served-By"])
    return seen


def answers(stack: Stack, path: str) -> bool:
    try:
        return stack.get(path).status_code == 200
    except requests.RequestException:
        return False


def test_routes_work_through_the_lbc(swarm_stack: Stack) -> None:
    stack = swarm_stack
    assert stack.get("/api/health/").json()["app"] == "backend"
    feed = stack.get("/bff/feed/")  # the BFF calls the backend by service name over the overlay network
    assert feed.status_code == 200 and feed.json()["backend"]["app"] == "backend"
    home = stack.get("/")
    assert home.status_code == 200 and "vue.global.prod" in home.text
    redirect = requests.get(stack.http + "/api/health/", allow_redirects=False, timeout=10)
    # To the LBC's own HTTPS port (the edge node's; this host reaches it on another one).
    assert redirect.status_code == 301
    assert redirect.headers["Location"] == f"https://127.0.0.1:{EDGE_HTTPS}/api/health/"


def test_every_backend_task_serves(swarm_stack: Stack) -> None:
    replicas = hostnames(swarm_stack, "backend")
    assert len(replicas) == 2
    assert served_by_all(swarm_stack, "/api/health/", replicas) == replicas


def test_notes_go_to_the_primary_and_the_replica_streams_them(swarm_stack: Stack) -> None:
    stack = swarm_stack
    created = requests.post(stack.https + "/api/notes/", json={"text": "replicated on a swarm"}, verify=False,
                            timeout=10)
    assert created.status_code == 201, created.text
    note_id = int(created.json()["id"])
    query = ["psql", "-U", "postgres", "-d", "backend", "-tAc", f"SELECT text FROM notes_note WHERE id = {note_id}"]
    deadline = time.monotonic() + 60
    while (out := stack.exec("db-replica-1", query)[1].strip()) != "replicated on a swarm":
        assert time.monotonic() < deadline, f"the replica never got the note: {out!r}"
        time.sleep(1)
    code, state = stack.exec("db-primary", ["psql", "-U", "postgres", "-tAc",
                                            "SELECT application_name, state FROM pg_stat_replication"])
    assert code == 0 and "streaming" in state, state
    nodes = stack.node_names()
    ((primary,), (replica,)) = stack.tasks("db-primary"), stack.tasks("db-replica-1")
    assert (nodes[primary["NodeID"]], nodes[replica["NodeID"]]) == (stack.cluster.node(2), stack.cluster.node(3))
    aliases = collections.Counter(stack.get(f"/api/notes/{note_id}/").headers["X-DB-Alias"] for _ in range(10))
    assert "replica_1" in aliases, aliases


def test_scale_is_a_service_scale_under_load_with_no_new_lbc_config(swarm_stack: Stack) -> None:
    stack = swarm_stack
    nginx_conf = stack.spec.parent / "stack" / "swarm" / "config" / "lbc" / "nginx.conf"
    conf_before = nginx_conf.read_bytes()
    (lbc_before,) = tasks(stack.docker, stack.project, "lbc")
    with LoadLoop(stack.https + "/api/health/", threads=4, max_requests=12_000, max_seconds=300) as load:
        load.wait_for(200)
        stack.cli("scale", "backend=4", *SWARM)
        grown = hostnames(stack, "backend")
        assert len(grown) == 4
        assert served_by_all(stack, "/api/health/", grown) == grown, "every new task gets traffic"
        load.wait_for(load.result.total + 300)
        stack.cli("scale", "backend=2", *SWARM)
        load.wait_for(load.result.total + 300)
    result = load.result
    assert result.failures == [], result.failures[:5]
    assert result.total >= 800
    assert len(hostnames(stack, "backend")) == 2
    assert "replicas: 2" in stack.spec.read_text()
    assert nginx_conf.read_bytes() == conf_before, "scaling regenerated the LBC's configuration"
    (lbc_after,) = tasks(stack.docker, stack.project, "lbc")
    assert lbc_after["ID"] == lbc_before["ID"], "the LBC was restarted or replaced"


class TaskCounter:
    """Counts the service's tasks twice a second while a rolling update goes on (bounded): those the swarm
    wants running (starting or running) and those running (healthy)."""

    def __init__(self, stack: Stack, service: str, max_seconds: float = 400.0) -> None:
        self.wanted: list[int] = []
        self.running: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stack, service, max_seconds), daemon=True)

    def _run(self, stack: Stack, service: str, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            found = wanted_tasks(stack.docker, stack.project, service)
            self.wanted.append(len(found))
            self.running.append(sum(t["Status"]["State"] == "running" for t in found))
            time.sleep(0.5)

    def __enter__(self) -> TaskCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_rolling_update_of_an_app_under_load_is_start_first_with_no_failed_request(swarm_stack: Stack) -> None:
    stack = swarm_stack
    before = hostnames(stack, "backend")
    assert len(before) == 2
    stack.edit_spec(lambda spec: spec["apc"]["apps"]["backend"].setdefault("env", {}).update({"RELEASE": "2"}))
    with LoadLoop(stack.https + "/api/health/", threads=4, max_requests=20_000, max_seconds=400) as load, \
            TaskCounter(stack, "backend") as counter:
        load.wait_for(200)
        stack.cli("up", *SWARM)  # returns once the update completed and every task is healthy
        after = hostnames(stack, "backend")
        seen_after = served_by_all(stack, "/api/health/", after)
        load.wait_for(load.result.total + 200)
    result = load.result
    assert result.failures == [], result.failures[:5]
    assert result.total >= 400
    assert len(after) == 2 and not (after & before), "every backend task was replaced"
    assert seen_after == after
    # Start-first: a new task starts beside the two old ones, and two tasks always run (healthy).
    assert max(counter.wanted) == 3, counter.wanted
    assert min(counter.running) >= 2, counter.running
    service = stack.docker.services.get(f"{stack.project}_backend")
    assert service.attrs["Spec"]["UpdateConfig"]["Order"] == "start-first"
    assert service.attrs["UpdateStatus"]["State"] == "completed"
    env = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "RELEASE=2" in env


def test_a_single_replica_app_updates_under_load_with_no_failed_request(swarm_stack: Stack) -> None:
    """With one task there is no other address to retry: the old task serves on (APP_STOP_DELAY) until the
    LBC's DNS answer names only the new one."""
    stack = swarm_stack
    (before,) = hostnames(stack, "bff")
    stack.edit_spec(lambda spec: spec["apc"]["apps"]["bff"].setdefault("env", {}).update({"RELEASE": "2"}))
    with LoadLoop(stack.https + "/bff/health/", threads=4, max_requests=20_000, max_seconds=300) as load:
        load.wait_for(200)
        stack.cli("up", *SWARM)
        (after,) = hostnames(stack, "bff")
        load.wait_for(load.result.total + 200)
    assert load.result.failures == [], load.result.failures[:5]
    assert after != before
    assert load.result.served_by >= {before, after}, "both the old and the new task served during the update"


def test_a_failing_update_rolls_back_and_the_old_tasks_keep_serving(swarm_stack: Stack) -> None:
    stack = swarm_stack
    before = hostnames(stack, "backend")
    # The APC entrypoint refuses APP_WORKERS=0: the new task exits before its health check ever passes.
    stack.edit_spec(lambda spec: spec["apc"]["apps"]["backend"].setdefault("env", {}).update({"APP_WORKERS": "0"}))
    try:
        with LoadLoop(stack.https + "/api/health/", threads=4, max_requests=10_000, max_seconds=300) as load:
            load.wait_for(200)
            result = stack.cli("up", *SWARM, check=False)
            load.wait_for(load.result.total + 200)
    finally:
        stack.edit_spec(lambda spec: spec["apc"]["apps"]["backend"]["env"].pop("APP_WORKERS"))  # as it was
    assert result.returncode == 4, result.stdout + result.stderr
    assert "backend: the rolling update failed and was rolled back" in result.stderr
    assert "Traceback" not in result.stderr
    assert load.result.failures == [], load.result.failures[:5]
    assert hostnames(stack, "backend") == before, "the old tasks were replaced"
    deadline = time.monotonic() + 60
    while (service := stack.docker.services.get(f"{stack.project}_backend")).attrs["UpdateStatus"]["State"] \
            != "rollback_completed":
        assert time.monotonic() < deadline, service.attrs["UpdateStatus"]
        time.sleep(1)
    assert "APP_WORKERS=0" not in service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]


def test_up_refuses_a_swarm_without_the_labels_it_places_services_by(swarm_stack: Stack) -> None:
    stack = swarm_stack
    node = stack.docker.nodes.get(stack.docker.info()["Swarm"]["NodeID"])
    labels = dict(node.attrs["Spec"]["Labels"])
    node.update({**node.attrs["Spec"], "Labels": {k: v for k, v in labels.items() if k != "deploystack.edge"}})
    try:
        result = stack.cli("up", *SWARM, check=False)
    finally:
        node.reload()
        node.update({**node.attrs["Spec"], "Labels": labels})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no node of the swarm is labelled deploystack.edge" in result.stderr
    assert "docker node update --label-add deploystack.edge=true NODE" in result.stderr
    # Without the label the swarm itself stopped the LBC; labelled again, the node gets it back.
    deadline = time.monotonic() + 90
    while not (tasks(stack.docker, stack.project, "lbc") and answers(stack, "/api/health/")):
        assert time.monotonic() < deadline, "the LBC did not come back on the labelled node"
        time.sleep(1)


def test_up_refuses_patroni_on_a_swarm_stack_whose_data_is_on_postgresql_15(swarm_stack: Stack) -> None:
    """`ha: patroni` would start an empty cluster beside db-primary's data: refused, nothing written or
    deployed (db upgrade moves data on Compose only)."""
    stack = swarm_stack
    before = stack.spec.read_text(encoding="utf-8")
    output = stack.spec.parent / "stack"
    lock = output / ".deploystack" / "lock"  # taken (touched) by every command

    def written() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file() and p != lock}

    files = written()
    services = {s.id: s.version for s in stack.docker.services.list(
        filters={"label": f"com.docker.stack.namespace={stack.project}"})}
    stack.edit_spec(lambda data: data["dbc"].update({"ha": "patroni"}))
    try:
        result = stack.cli("up", *SWARM, check=False)
    finally:
        stack.spec.write_text(before, encoding="utf-8")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "runs PostgreSQL 15 (its db-primary service)" in result.stderr and "Traceback" not in result.stderr
    assert written() == files
    assert {s.id: s.version for s in stack.docker.services.list(
        filters={"label": f"com.docker.stack.namespace={stack.project}"})} == services


def test_scaling_the_database_adds_a_streaming_replica_and_scaling_down_drops_its_slot(swarm_stack: Stack) -> None:
    """The primary runs on node 2 and the replicas on node 3, neither of them the engine deploystack drives:
    the removed replica's slot is dropped by a job on the private network; its volume stays on node 3,
    which that engine cannot reach (`scale` says so)."""
    stack = swarm_stack
    volume = f"{stack.project}_db-replica-2-data"
    replica_node = stack.cluster.node(3)

    def slots() -> dict[str, str]:
        code, out = stack.exec("db-primary", ["psql", "-U", "postgres", "-tAc",
                                              "SELECT slot_name, active FROM pg_replication_slots"])
        assert code == 0, out
        return dict(line.split("|") for line in out.split())

    stack.cli("scale", "dbc=2", *SWARM)
    eventually(lambda: slots() == {"replica_1": "t", "replica_2": "t"}, "both replicas streaming", 120)
    assert stack.node_docker(replica_node, "volume", "inspect", volume)[0] == 0

    result = stack.cli("scale", "dbc=1", *SWARM)
    assert slots() == {"replica_1": "t"}  # the removed replica's slot would pin WAL until the disk filled
    assert "dropped replication slot replica_2" in result.stderr + result.stdout
    assert not stack.docker.services.list(filters={"name": f"{stack.project}_db-replica-2"})
    assert not stack.docker.services.list(filters={"name": f"{stack.project}_db-provision"})
    # On node 3 by hand, as docs/swarm.md says: the test leaves no volume behind.
    eventually(lambda: stack.node_docker(replica_node, "volume", "rm", volume)[0] == 0, f"{volume} removed", 60)
