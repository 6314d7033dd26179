"""`dbc.ha: patroni` on real Docker, Patroni, etcd and HAProxy, under write load through the LBC: a switchover
and a killed leader lose no acknowledged write (synchronous mode), writes come back within 30 s of the kill
with no command run, the old leader rejoins as a standby, and `scale dbc` touches no app container. Only the
etcd members and the nodes reach etcd (issue #16), and `up` moves a stack made before that (etcd on the
private network) onto it under writes, keeping the cluster.

One stack (three etcd members, three PostgreSQL 17 nodes, the router, one app), shared with test_patroni_rolling. The
measurements (failover time, failed requests) are printed: run with -s to see them."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import urllib3
from docker.models.containers import Container

from deploystack.plan.names import container_name, network_name
from deploystack.render.project import Rendered
from deploystack.testing import StackUnderTest
from tests.conftest import eventually
from tests.e2e.conftest import SharedStacks
from tests.e2e.test_cdc import CONNECT as PY_CONNECT  # from an app replica, with Python's socket

SPEC = Path(__file__).parents[1] / "fixtures/projects/patroni-ha/deploystack.yaml"
FAILOVER_LIMIT_S = 30.0
OUTAGE_WINDOW_S = 45.0  # failed requests this long after a kill belong to its outage

# The stack is shared with test_patroni_rolling (tests/e2e/conftest.py): one bring-up and teardown fewer.
pytestmark = [pytest.mark.docker, pytest.mark.shared_stack(SPEC)]


@pytest.fixture(scope="module")
def ha_stack(shared_stacks: SharedStacks, request: pytest.FixtureRequest) -> StackUnderTest:
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return shared_stacks.up(SPEC, request, reset=as_the_spec_says)


def as_the_spec_says(stack: StackUnderTest) -> None:
    """The shared stack after another module's tests, as a new one would be: every container running (`up`
    starts a stopped one), Patroni's synchronous mode as the spec sets it (a test turns it off), and all
    three nodes streaming, with a synchronous standby when the spec asks for one."""
    cli(stack, "up")
    synchronous = stack.stack.dbc.synchronous
    code, out = stack.exec("db-node-1", ["patronictl", "-c", "/etc/deploystack/patroni.yml", "edit-config",
                                         "--force", "--set", f"synchronous_mode={str(synchronous).lower()}"])
    assert code == 0, out

    def settled() -> bool:
        found = healthy_cluster(stack, 3)
        return found is not None and any(m["role"] == "sync_standby" for m in found.values()) == synchronous
    eventually(settled, "the shared stack as its spec says", timeout=180)


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


ETCD = ("etcd-1", "etcd-2", "etcd-3")
NODES = ("db-node-1", "db-node-2", "db-node-3")
# TCP connections from inside a container, in bash (every image of the stack has it, not all have Python),
# all at once: "<host>:<port> ok" or "<host>:<port> failed" (a name that does not resolve, an unreachable
# network, or no answer within 4 s) for each.
BASH_CONNECT = "(timeout 4 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null && echo {host}:{port} ok " \
               "|| echo {host}:{port} failed) &"


def etcd_targets(stack: StackUnderTest) -> list[str]:
    """etcd's client and peer ports by name and by every address its members have."""
    client = docker.from_env()
    addresses = [net["IPAddress"] for member in ETCD
                 for net in client.containers.get(container_name(stack.project, member))
                 .attrs["NetworkSettings"]["Networks"].values()]
    assert addresses and all(addresses)
    return ["etcd-1:2379", "etcd-2:2380", *(f"{a}:2379" for a in addresses), *(f"{a}:2380" for a in addresses)]


def who_reaches_etcd(stack: StackUnderTest) -> dict[str, bool]:
    """For every running container of the stack: does it open a connection to any of etcd_targets?"""
    targets = etcd_targets(stack)
    found: dict[str, bool] = {}
    for container in docker.from_env().containers.list(
            filters={"label": f"com.docker.compose.project={stack.project}"}):
        service = container.labels["com.docker.compose.service"]
        script = "\n".join(BASH_CONNECT.format(host=h, port=p) for h, p in (t.rsplit(":", 1) for t in targets))
        code, out = container.exec_run(["bash", "-c", script + "\nwait"])
        tried = dict(line.split() for line in out.decode(errors="replace").splitlines())
        assert code == 0 and set(tried) == set(targets), out
        found[f"{service}-{container.labels['com.docker.compose.container-number']}"] = "ok" in tried.values()
    return dict(sorted(found.items()))


def app_tries(stack: StackUnderTest, targets: list[str]) -> dict[str, str]:
    app = next(c for c in docker.from_env().containers.list(
        filters={"label": f"com.docker.compose.project={stack.project}"})
        if c.labels["com.docker.compose.service"] == "backend")
    code, out = app.exec_run(["python", "-c", PY_CONNECT, json.dumps(targets)])
    assert code == 0, out
    tried: dict[str, str] = json.loads(out)
    return tried


def test_nothing_but_the_etcd_members_and_the_nodes_reaches_etcd(ha_stack: StackUnderTest) -> None:
    """etcd has no TLS and no authentication: an app that reached it could rewrite Patroni's configuration
    (an archive_command runs on every node) or delete the leader key. It is on `dcs`, with the nodes only."""
    eventually(lambda: healthy_cluster(ha_stack, 3), "a healthy cluster")
    targets = etcd_targets(ha_stack)
    tried = app_tries(ha_stack, [*targets, "db-router:5432"])
    assert tried.pop("db-router:5432") == "ok", "the probe itself works: the app reaches its database"
    print(f"\nfrom the backend replica: {tried}")
    assert all(result != "ok" for result in tried.values()), tried
    reaches = who_reaches_etcd(ha_stack)
    print(f"reach etcd: {[c for c, ok in reaches.items() if ok]}; do not: {[c for c, ok in reaches.items() if not ok]}")
    assert {c for c, ok in reaches.items() if ok} == {f"{s}-1" for s in (*ETCD, *NODES)}
    assert {"lbc-1", "backend-1", "db-router-1"} <= set(reaches)  # the probe ran in the others too
    # ... and Patroni still leads through it: a write through the app.
    reply = requests.post(ha_stack.url("/api/notes/"), json={"text": "etcd isolated"}, verify=False, timeout=10)
    assert reply.status_code == 201, reply.text


def previous_layout(rendered: Rendered) -> Rendered:
    """The stack as deploystack made it before etcd had a network of its own: the members and the nodes on
    `private` alone (their containers as that version defined them: the network is all that changed)."""
    services = tuple(dataclasses.replace(s, networks=("private",)) if s.name.startswith(("etcd-", "db-node-"))
                     else s for s in rendered.plan.services)
    networks = tuple(n for n in rendered.plan.networks if n.name != "dcs")
    return dataclasses.replace(rendered, plan=dataclasses.replace(rendered.plan, services=services,
                                                                  networks=networks))


def etcd_state(stack: StackUnderTest) -> tuple[list[str], str]:
    """etcd's members (id and name) and Patroni's `initialize` key (the cluster's system identifier)."""
    etcdctl = ["etcdctl", "--endpoints=http://127.0.0.1:2379"]
    code, out = stack.exec("etcd-1", [*etcdctl, "member", "list"])
    assert code == 0, out
    members_now = sorted(",".join(line.split(", ")[:3]) for line in out.strip().splitlines())
    key_name = f"/deploystack/{stack.project}/initialize"
    code, key = stack.exec("etcd-1", [*etcdctl, "get", "--print-value-only", key_name])
    assert code == 0 and key.strip(), key
    return members_now, key.strip()


def gap(acked: list[float], start: float, end: float) -> float:
    moments = [start, *(t for t in acked if start < t < end), end]
    return max(b - a for a, b in zip(moments, moments[1:], strict=False))


def test_up_moves_a_stack_made_before_off_private_under_writes_keeping_the_cluster(
        ha_stack: StackUnderTest) -> None:
    from deploystack.engine.apply import Converger
    from deploystack.engine.client import connect
    from deploystack.operations import Session, stack

    eventually(lambda: healthy_cluster(ha_stack, 3), "a healthy cluster")
    client = docker.from_env()
    # The stack as the previous version made it: down (the volumes stay), then up with its containers. (Not
    # rolled there: a node on both networks may have registered its `dcs` address in etcd, which a new node
    # on `private` alone cannot reach; going back is not supported, docs/db.md.)
    stack.down(Session(ha_stack.target, ha_stack.report), volumes=False)
    Converger(connect(), previous_layout(Session(ha_stack.target).rendered), ha_stack.report).up()
    eventually(lambda: healthy_cluster(ha_stack, 3), "a healthy cluster on the old layout", timeout=180)
    before = who_reaches_etcd(ha_stack)
    print(f"\nbefore: reach etcd: {[c for c, ok in before.items() if ok]}; "
          f"do not: {[c for c, ok in before.items() if not ok]}")
    assert all(before.values())  # every container of the stack, the apps included: the hole of issue #16
    assert set(app_tries(ha_stack, ["etcd-1:2379"]).values()) == {"ok"}
    members_before, system_id = etcd_state(ha_stack)
    assert leader_sql(ha_stack, "SELECT system_identifier FROM pg_control_system()") == system_id
    ids = {s: client.containers.get(container_name(ha_stack.project, s)).id for s in (*ETCD, *NODES)}

    with WriteLoad(ha_stack, limit_s=480, max_requests=40000) as load:
        started = time.monotonic()
        Converger(connect(), Session(ha_stack.target).rendered, ha_stack.report).up()
        finished = time.monotonic()
        eventually(lambda: sum(t > finished for t, _ in load.acked) >= 10, "writes after up", timeout=30)
    failed = [t for t in load.failed if started < t < finished]
    acked = [t for t, _ in load.acked if started < t < finished]
    longest = gap(acked, started, finished)
    lost = missing_rows(ha_stack, load)
    after = who_reaches_etcd(ha_stack)
    print(f"moved in {finished - started:.1f} s: {len(acked)} writes acknowledged, {len(failed)} failed, longest "
          f"gap {longest:.1f} s, {len(lost)} lost; after: reach etcd: {[c for c, ok in after.items() if ok]}; "
          f"do not: {[c for c, ok in after.items() if not ok]}")
    assert lost == []
    # The nodes' switchover fails a few writes, as any rolling replacement of them does (test_patroni_rolling:
    # 2-3, gaps of 6-9 s); measured here 7 and 14.3 s, on a machine busy with another test run as well.
    assert len(failed) <= 12 and longest < 20.0
    assert all(client.containers.get(container_name(ha_stack.project, s)).id != ids[s] for s in ids)
    # The same cluster: etcd's members kept their identity (their data volumes), Patroni's keys are there,
    # and PostgreSQL's system identifier is the one etcd knows (no new cluster was bootstrapped).
    assert etcd_state(ha_stack) == (members_before, system_id)
    assert leader_sql(ha_stack, "SELECT system_identifier FROM pg_control_system()") == system_id
    eventually(lambda: healthy_cluster(ha_stack, 3), "all three streaming again", timeout=60)
    assert {c for c, ok in after.items() if ok} == {f"{s}-1" for s in (*ETCD, *NODES)}
    dcs, private = network_name(ha_stack.project, "dcs"), network_name(ha_stack.project, "private")
    for service in (*ETCD, *NODES):  # the networks they joined for the move went with the old containers
        attached = set(client.containers.get(container_name(ha_stack.project, service))
                       .attrs["NetworkSettings"]["Networks"])
        assert attached == ({dcs} if service in ETCD else {private, dcs}), (service, attached)
    assert "replacing" not in cli(ha_stack, "up").stderr  # converged: a second up does nothing


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

