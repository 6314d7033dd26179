"""Zero-downtime promises under a bounded load through the LBC: scaling 2→4→2, and a replica killed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.conftest import Stack
from tests.load import LoadLoop

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def running(stack: Stack) -> Iterator[Stack]:
    stack.cli("up")  # an earlier module may have taken the stack down
    yield stack
    stack.cli("up")  # leave it as the spec says (a killed replica started again)


def hostnames(stack: Stack, app: str) -> set[str]:
    return {c.attrs["Config"]["Hostname"] for c in stack.containers(app) if c.status == "running"}


def test_scale_up_and_down_under_load_drops_nothing(running: Stack) -> None:
    stack = running
    with LoadLoop(stack.https + "/api/health/", threads=4, max_requests=12_000, max_seconds=300) as load:
        load.wait_for(300)
        stack.cli("scale", "backend=4")
        grown = hostnames(stack, "backend")
        assert len(grown) == 4
        seen_before = load.result.total
        load.wait_for(seen_before + 400)
        served_at_four = set(load.result.served_by)
        stack.cli("scale", "backend=2")
        load.wait_for(max(load.result.total + 300, 2000))
    result = load.result
    assert result.failures == [], result.failures[:5]
    assert result.total >= 2000
    assert grown <= served_at_four, "every new replica serves"
    assert len(hostnames(stack, "backend")) == 2
    assert "replicas: 2" in stack.spec.read_text()


SLOWEST_AFTER_KILL_S = 2.0


def test_a_killed_replica_costs_no_failed_or_slow_get(running: Stack) -> None:
    stack = running
    victim = sorted(stack.containers("backend"), key=lambda c: c.name)[-1]
    with LoadLoop(stack.https + "/api/health/", threads=4, max_requests=6000, max_seconds=120) as load:
        load.wait_for(300)
        victim.kill()
        killed_at = load.result.total
        load.wait_for(killed_at + 1500)
    result = load.result
    assert result.failures == [], result.failures[:5]
    # A request sent to the dead replica costs the LBC's connect timeout (250 ms) before its retry on
    # another; what this guards against is a wait for the dead address (seconds: ARP gives up after 3 s,
    # nginx's default connect timeout is 60 s). 1.07 s was seen on a loaded CI machine: the bound is 2 s.
    assert max(result.latencies) < SLOWEST_AFTER_KILL_S, f"slowest request took {max(result.latencies):.2f}s"


def test_a_database_replica_killed_under_read_load_costs_no_failed_read(running: Stack) -> None:
    stack = running
    note_id = requests.post(stack.https + "/api/notes/", json={"text": "read under load"}, verify=False,
                            timeout=10).json()["id"]
    (replica,) = stack.containers("db-replica-1")
    with LoadLoop(stack.https + f"/api/notes/{note_id}/", threads=4, max_requests=4000, max_seconds=120) as load:
        load.wait_for(300)
        replica.kill()
        killed_at = load.result.total
        load.wait_for(killed_at + 1000)
    assert load.result.failures == [], load.result.failures[:5]
    stack.cli("up")  # the replica starts again and catches up


def replica_has_note(stack: Stack, replica: str, note_id: int) -> bool:
    (container,) = stack.containers(replica)
    code, out = container.exec_run(["psql", "-U", "postgres", "-d", "backend", "-tAc",
                                    f"SELECT text FROM notes_note WHERE id = {int(note_id)}"])
    return code == 0 and out.decode().strip() == "for the new replica"


def test_a_new_database_replica_catches_up_and_a_removed_one_leaves_no_slot(running: Stack) -> None:
    stack = running
    created = requests.post(stack.https + "/api/notes/", json={"text": "for the new replica"}, verify=False,
                            timeout=10)
    note_id = created.json()["id"]
    stack.cli("scale", "dbc=2")
    deadline = time.monotonic() + 60
    while not replica_has_note(stack, "db-replica-2", note_id):
        assert time.monotonic() < deadline, "db-replica-2 never caught up"
        time.sleep(1)
    status = json.loads(stack.cli("db", "status", "--json").stdout)
    assert sorted(n["service"] for n in status["nodes"] if n["role"] == "replica") == ["db-replica-1", "db-replica-2"]
    stack.cli("scale", "dbc=1")
    assert stack.containers("db-replica-2") == []
    label = {"label": f"com.docker.compose.project={stack.project}"}
    volumes = {v.name for v in stack.docker.volumes.list(filters=label)}
    assert f"{stack.project}_db-replica-2-data" not in volumes, "a removed replica's copy would come back stale"
    assert f"{stack.project}_db-replica-1-data" in volumes
    (primary,) = stack.containers("db-primary")
    code, out = primary.exec_run(["psql", "-U", "postgres", "-tAc", "SELECT slot_name FROM pg_replication_slots"])
    assert out.decode().split() == ["replica_1"]


def test_scale_refuses_bad_targets_and_leaves_the_spec_alone(running: Stack) -> None:
    before = running.spec.read_bytes()
    for arg, message in (("apc=0", "at least 1 replica"), ("nosuch=2", "no app named 'nosuch'"),
                         ("apc=x", "must be a whole number")):
        result = running.cli("scale", arg, check=False)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert running.spec.read_bytes() == before
