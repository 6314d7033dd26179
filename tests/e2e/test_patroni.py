"""`dbc.ha: patroni` on real Docker, Patroni, etcd and HAProxy, under write load through the LBC: a switchover
and a killed leader lose no acknowledged write (synchronous mode), writes come back within 30 s of the kill
with no command run, the old leader rejoins as a standby, and `scale dbc` touches no app container.

One stack for the module (three etcd members, three PostgreSQL 17 nodes, the router, one app). The
measurements (failover time, failed requests) are printed: run with -s to see them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import urllib3
from docker.models.containers import Container

from deploystack.plan.names import container_name
from deploystack.testing import StackUnderTest
from tests.conftest import eventually

pytestmark = pytest.mark.docker

SPEC = Path(__file__).parents[1] / "fixtures/projects/patroni-ha/deploystack.yaml"
FAILOVER_LIMIT_S = 30.0
OUTAGE_WINDOW_S = 45.0  # failed requests this long after a kill belong to its outage


@pytest.fixture(scope="module")
def ha_stack() -> Iterator[StackUnderTest]:
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    with StackUnderTest(SPEC) as under_test:
        yield under_test


def cli(stack: StackUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(stack.spec)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"deploystack {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def cluster(stack: StackUnderTest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(stack, "db", "status", "--json").stdout)
    return data


def members(stack: StackUnderTest) -> dict[str, dict[str, Any]]:
    return {m["service"]: m for m in cluster(stack)["members"]}


def healthy_cluster(stack: StackUnderTest, nodes: int) -> dict[str, dict[str, Any]] | None:
    """Every node running under Patroni: one leader, the others streaming at 0 bytes of lag."""
    found = members(stack)
    leaders = [m for m in found.values() if m["role"] == "leader"]
    standbys = [m for m in found.values() if m["role"] != "leader"]
    ok = (len(found) == nodes and len(leaders) == 1 and leaders[0]["patroni_state"] == "running"
          and all(m["patroni_state"] == "streaming" and m["lag_bytes"] == 0 for m in standbys))
    return found if ok else None


def leader_sql(stack: StackUnderTest, query: str) -> str:
    """`query` on the leader, in the backend app's own database."""
    leader = cluster(stack)["leader"]
    code, out = stack.exec(leader, ["psql", "-X", "-U", "postgres", "-d", "backend", "-qtAc", query])
    assert code == 0, out
    return out.strip()


@dataclass
class WriteLoad:
    """POSTs through the LBC in a thread, bounded in count and time; records what was acknowledged (201)."""

    stack: StackUnderTest
    limit_s: float = 120.0
    max_requests: int = 5000
    acked: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, note id)
    failed: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> WriteLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        eventually(lambda: len(self.acked) >= 10, "writes acknowledged before the event", timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + self.limit_s
        for n in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                reply = session.post(self.stack.url("/api/notes/"), json={"text": f"load {n}"}, verify=False,
                                     timeout=5)
            except requests.RequestException:
                reply = None
            if reply is not None and reply.status_code == 201:
                self.acked.append((time.monotonic(), int(reply.json()["id"])))
            else:
                self.failed.append(time.monotonic())
                time.sleep(0.1)

    def _outage_end(self, moment: float) -> float:
        """The last failed request of the outage that began at `moment` (a request in flight at `moment`
        may still be acknowledged by the dying leader, so the first acknowledgement after `moment` does
        not tell that writes are back)."""
        return max((t for t in self.failed if moment < t < moment + OUTAGE_WINDOW_S), default=moment)

    def recovered_after(self, moment: float, timeout: float) -> float:
        """Wait until 10 writes were acknowledged after the outage; return seconds from `moment` to the
        first of them."""
        def back() -> bool:
            end = self._outage_end(moment)
            return sum(t > end for t, _ in self.acked) >= 10
        eventually(back, "writes acknowledged again", timeout=timeout)
        end = self._outage_end(moment)
        return next(t for t, _ in self.acked if t > end) - moment


def missing_rows(stack: StackUnderTest, load: WriteLoad) -> list[int]:
    ids = {note for _, note in load.acked}
    present = {int(x) for x in leader_sql(stack, "SELECT id FROM notes_note").split()}
    return sorted(ids - present)


def test_status_shows_a_leader_and_standbys_from_patroni(ha_stack: StackUnderTest) -> None:
    found = eventually(lambda: healthy_cluster(ha_stack, 3), "three nodes: a leader and two streaming standbys")
    assert set(found) == {"db-node-1", "db-node-2", "db-node-3"}
    assert len({m["timeline"] for m in found.values()}) == 1
    assert sum(m["role"] == "sync_standby" for m in found.values()) == 1  # dbc.synchronous: true
    table = cli(ha_stack, "db", "status").stdout
    assert "leader" in table and "streaming" in table
    # The apps know only the router: a name that always resolves, whoever leads.
    code, out = ha_stack.exec("backend", ["sh", "-c", "echo $DB_HOST $DB_REPLICAS $DB_TARGET_SESSION_ATTRS"])
    assert (code, out.split()) == (0, ["db-router", "db-router:5433", "read-write"])
    assert leader_sql(ha_stack, "SHOW server_version_num")[:2] == "17"


def test_switchover_under_load_loses_no_acknowledged_write(ha_stack: StackUnderTest) -> None:
    eventually(lambda: healthy_cluster(ha_stack, 3), "a healthy cluster")
    before = cluster(ha_stack)["leader"]
    with WriteLoad(ha_stack) as load:
        started = time.monotonic()
        out = cli(ha_stack, "db", "switchover").stdout
        load.recovered_after(started, timeout=FAILOVER_LIMIT_S)
    after = cluster(ha_stack)["leader"]
    print(f"\nswitchover {before} -> {after}: {len(load.acked)} writes acknowledged, "
          f"{sum(t > started for t in load.failed)} failed during it")
    assert after != before and f"{after} leads now" in out
    assert missing_rows(ha_stack, load) == []


def kill_under_write_load(stack: StackUnderTest, leader: str) -> tuple[Container, WriteLoad, float]:
    """Kill the leader's container while writes go on: (the container, the load, seconds from the kill to
    the first acknowledged write), once another node leads."""
    container = docker.from_env().containers.get(container_name(stack.project, leader))
    with WriteLoad(stack) as load:
        killed = time.monotonic()
        container.kill()
        failover_s = load.recovered_after(killed, timeout=OUTAGE_WINDOW_S + 15)
    eventually(lambda: cluster(stack)["leader"] not in (None, leader), "a new leader")
    return container, load, failover_s


def test_killing_the_leader_fails_over_by_itself_and_it_rejoins(ha_stack: StackUnderTest) -> None:
    eventually(lambda: healthy_cluster(ha_stack, 3), "a healthy cluster", timeout=90)
    leader = cluster(ha_stack)["leader"]
    container, load, failover_s = kill_under_write_load(ha_stack, leader)
    lost = missing_rows(ha_stack, load)
    print(f"\nkilled {leader}: first acknowledged write {failover_s:.1f} s later; "
          f"{len(load.acked)} acknowledged, {len(lost)} lost, {len(load.failed)} failed requests")
    assert failover_s < FAILOVER_LIMIT_S
    assert lost == []  # synchronous mode: every acknowledged commit was on the promoted standby
    new_leader = cluster(ha_stack)["leader"]
    assert new_leader not in (None, leader)

    container.start()  # the old leader comes back as a standby of the new timeline (pg_rewind if needed)
    found = eventually(lambda: healthy_cluster(ha_stack, 3), f"{leader} streaming again", timeout=120)
    assert found[leader]["role"] != "leader" and found[new_leader]["role"] == "leader"
    assert found[leader]["timeline"] == found[new_leader]["timeline"] > 1


def app_container_ids(stack: StackUnderTest) -> dict[str, str]:
    found = docker.from_env().containers.list(filters={"label": f"com.docker.compose.project={stack.project}"})
    return {c.name: c.id for c in found if c.labels.get("com.docker.compose.service") in ("backend", "lbc")}


def test_scale_dbc_up_and_down_under_load_recreates_no_app_container(ha_stack: StackUnderTest) -> None:
    eventually(lambda: healthy_cluster(ha_stack, 3), "a healthy cluster", timeout=120)
    before = app_container_ids(ha_stack)
    assert len(before) == 2
    with WriteLoad(ha_stack, limit_s=300) as load:
        started = time.monotonic()
        cli(ha_stack, "scale", "dbc=3")
        grown = eventually(lambda: healthy_cluster(ha_stack, 4), "db-node-4 streaming", timeout=120)
        code, out = ha_stack.exec("db-router", ["grep", "-c", "server db-node-4", "/etc/deploystack/haproxy.cfg"])
        assert (code, out.strip()) == (0, "2")
        cli(ha_stack, "scale", "dbc=2")
        shrunk = eventually(lambda: healthy_cluster(ha_stack, 3), "three nodes again", timeout=120)
        acked_during = sum(t > started for t, _ in load.acked)
    failed = [t for t in load.failed if t > started]
    print(f"\nscale dbc 2 -> 3 -> 2: {acked_during} writes acknowledged, {len(failed)} failed")
    assert "db-node-4" in grown and "db-node-4" not in shrunk
    assert app_container_ids(ha_stack) == before  # same containers: the apps know only the router
    assert failed == []
    assert missing_rows(ha_stack, load) == []
    volumes = {v.name for v in docker.from_env().volumes.list(
        filters={"label": f"com.docker.compose.project={ha_stack.project}"})}
    assert f"{ha_stack.project}_db-node-4-data" not in volumes


def test_without_synchronous_mode_a_killed_leader_is_reported(ha_stack: StackUnderTest) -> None:
    """The measurement of the issue: rows lost when the leader is killed in asynchronous mode (reported,
    not asserted: the standbys are usually within a millisecond here)."""
    found = eventually(lambda: healthy_cluster(ha_stack, 3), "a healthy cluster", timeout=120)
    leader = next(name for name, m in found.items() if m["role"] == "leader")
    code, out = ha_stack.exec(leader, ["patronictl", "-c", "/etc/deploystack/patroni.yml", "edit-config",
                                       "--force", "--set", "synchronous_mode=false"])
    assert code == 0, out
    eventually(lambda: all(m["role"] != "sync_standby" for m in members(ha_stack).values()), "asynchronous")
    container, load, failover_s = kill_under_write_load(ha_stack, leader)
    lost = missing_rows(ha_stack, load)
    print(f"\nasynchronous, killed {leader}: first acknowledged write {failover_s:.1f} s later; "
          f"{len(load.acked)} acknowledged, {len(lost)} lost")
    assert failover_s < FAILOVER_LIMIT_S
    container.start()
