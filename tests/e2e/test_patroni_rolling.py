"""`dbc.ha: patroni` keeps the database up while `up` replaces its nodes (a changed patroni.yml or image):
standbys one at a time, then a switchover, then the old leader, under write load through the LBC. Then, on
the same stack: `db backup`, `db restore` and `db shell` work on whichever node leads; a killed standby
costs no read and rejoins; a killed etcd member changes nothing.

test_patroni's stack, after its tests (shared: tests/e2e/conftest.py; the helpers are test_patroni.py's).
Run with -s to see the figures."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
import requests
import urllib3
from ruamel.yaml import YAML

from deploystack.testing import StackUnderTest
from tests.conftest import eventually
from tests.e2e.conftest import SharedStacks
from tests.e2e.test_patroni import (
    SPEC,
    WriteLoad,
    as_the_spec_says,
    cli,
    cluster,
    healthy_cluster,
    leader_sql,
    members,
    missing_rows,
)

pytestmark = [pytest.mark.docker, pytest.mark.shared_stack(SPEC)]  # test_patroni's stack, after its tests

NODES = ("db-node-1", "db-node-2", "db-node-3")
SWITCHOVER_FAILURES = 8  # refused while the router moves to the new leader (measured: 2-3; all nodes at once: 13)
LONGEST_GAP_S = 15.0


@pytest.fixture(scope="module")
def rolling_stack(shared_stacks: SharedStacks, request: pytest.FixtureRequest) -> StackUnderTest:
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return shared_stacks.up(SPEC, request, reset=as_the_spec_says)  # patroni-ha's, shared with test_patroni


def node_ids(stack: StackUnderTest) -> dict[str, str]:
    client = docker.from_env()
    return {node: client.containers.get(f"{stack.project}-{node}-1").id or "" for node in NODES}


def set_dbc(stack: StackUnderTest, key: str, value: object) -> None:
    yaml = YAML()
    data = yaml.load(stack.spec.read_text(encoding="utf-8"))
    data["dbc"][key] = value
    with stack.spec.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)


def longest_gap(acked: list[float], start: float, end: float) -> float:
    moments = [start, *(t for t in acked if start < t < end), end]
    return max(b - a for a, b in zip(moments, moments[1:], strict=False))


def test_up_replaces_the_nodes_one_at_a_time_and_writes_go_on(rolling_stack: StackUnderTest) -> None:
    eventually(lambda: healthy_cluster(rolling_stack, 3), "a healthy cluster", timeout=180)
    before_ids = node_ids(rolling_stack)
    leader = cluster(rolling_stack)["leader"]
    set_dbc(rolling_stack, "max_connections", 120)  # lands in patroni.yml: every node's config changes
    with WriteLoad(rolling_stack, limit_s=420) as load:
        started = time.monotonic()
        result = cli(rolling_stack, "up")
        out = result.stdout + result.stderr  # the steps are progress: stderr
        finished = time.monotonic()
        eventually(lambda: sum(t > finished for t, _ in load.acked) >= 10, "writes after up", timeout=30)
    failed = [t for t in load.failed if started < t < finished]
    acked = [t for t, _ in load.acked if started < t < finished]
    gap = longest_gap(acked, started, finished)
    print(f"\nrolling replacement of 3 nodes in {finished - started:.1f} s: {len(acked)} writes acknowledged, "
          f"{len(failed)} failed, longest gap between acknowledged writes {gap:.1f} s; leader {leader} -> "
          f"{cluster(rolling_stack)['leader']}")
    after_ids = node_ids(rolling_stack)
    assert all(after_ids[n] != before_ids[n] for n in NODES)  # every node recreated
    assert "rolling replacement" in out and "switchover" in out
    assert out.index(f"replacing {rolling_stack.project}-{leader}-1") > out.index("switchover")
    assert len(failed) <= SWITCHOVER_FAILURES and gap < LONGEST_GAP_S
    assert missing_rows(rolling_stack, load) == []
    eventually(lambda: healthy_cluster(rolling_stack, 3), "all three streaming again", timeout=60)
    # What the user changed is what PostgreSQL runs with (Patroni keeps it in etcd: up wrote it there).
    assert "Patroni's dynamic configuration: postgresql.parameters.max_connections=120" in out
    assert leader_sql(rolling_stack, "SHOW max_connections") == "120"
    again = cli(rolling_stack, "up").stderr
    assert "replacing" not in again and "dynamic configuration" not in again  # converged: nothing to do


def test_db_backup_restore_and_shell_use_the_leader(rolling_stack: StackUnderTest, tmp_path: Path) -> None:
    found = eventually(lambda: healthy_cluster(rolling_stack, 3), "a healthy cluster", timeout=120)
    leader = next(name for name, m in found.items() if m["role"] == "leader")
    rows = int(leader_sql(rolling_stack, "SELECT count(*) FROM notes_note"))
    assert rows > 0
    out = cli(rolling_stack, "db", "backup", str(tmp_path)).stderr
    assert f"{rolling_stack.project}-{leader}-1" in out
    leader_sql(rolling_stack, "DELETE FROM notes_note")
    cli(rolling_stack, "db", "restore", str(tmp_path))
    assert int(leader_sql(rolling_stack, "SELECT count(*) FROM notes_note")) == rows
    shell = subprocess.run([sys.executable, "-m", "deploystack", "db", "shell", "-f", str(rolling_stack.spec),
                            "--", "-tAc", "SELECT pg_is_in_recovery(), current_user"],
                           capture_output=True, text=True, timeout=60)
    assert (shell.returncode, shell.stdout.strip()) == (0, "f|backend"), shell.stderr


def test_a_killed_standby_costs_no_read_and_rejoins(rolling_stack: StackUnderTest) -> None:
    found = eventually(lambda: healthy_cluster(rolling_stack, 3), "a healthy cluster", timeout=120)
    standby = next(name for name, m in found.items() if m["role"] == "replica")  # not the synchronous one
    container = docker.from_env().containers.get(f"{rolling_stack.project}-{standby}-1")
    container.kill()
    session = requests.Session()
    replies = []
    for _ in range(100):  # bounded: 100 reads, about 10 s
        try:
            replies.append(session.get(rolling_stack.url("/api/notes/"), verify=False, timeout=5).status_code)
        except requests.RequestException:
            replies.append(0)
        time.sleep(0.1)
    print(f"\nkilled standby {standby}: {sum(r != 200 for r in replies)} of {len(replies)} reads failed")
    assert replies.count(200) == len(replies)
    container.start()
    eventually(lambda: healthy_cluster(rolling_stack, 3), f"{standby} streaming again", timeout=120)


def test_a_killed_etcd_member_changes_nothing(rolling_stack: StackUnderTest) -> None:
    eventually(lambda: healthy_cluster(rolling_stack, 3), "a healthy cluster", timeout=120)
    leader = cluster(rolling_stack)["leader"]
    container = docker.from_env().containers.get(f"{rolling_stack.project}-etcd-2-1")
    with WriteLoad(rolling_stack, limit_s=60) as load:
        killed = time.monotonic()
        container.kill()
        eventually(lambda: sum(t > killed + 10 for t, _ in load.acked) >= 10, "writes 10 s after", timeout=40)
    failed = [t for t in load.failed if t > killed]
    print(f"\nkilled etcd-2: {sum(t > killed for t, _ in load.acked)} writes acknowledged, {len(failed)} failed")
    assert failed == []
    assert cluster(rolling_stack)["leader"] == leader and len(members(rolling_stack)) == 3
    assert missing_rows(rolling_stack, load) == []
    container.start()
    eventually(lambda: docker.from_env().containers.get(container.id).attrs["State"]["Health"]["Status"]
               == "healthy", "etcd-2 healthy again", timeout=60)
