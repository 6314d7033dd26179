"""`dbc.ha: patroni` keeps the database up while `up` replaces its nodes (a changed patroni.yml or image):
standbys one at a time, then a switchover, then the old leader, under write load through the LBC.

One stack for the module, its own (the helpers are test_patroni.py's). Run with -s to see the figures."""

from __future__ import annotations

import time
from collections.abc import Iterator

import docker
import pytest
import urllib3
from ruamel.yaml import YAML

from deploystack.testing import StackUnderTest
from tests.conftest import eventually
from tests.e2e.test_patroni import SPEC, WriteLoad, cli, cluster, healthy_cluster, missing_rows

pytestmark = pytest.mark.docker

NODES = ("db-node-1", "db-node-2", "db-node-3")
SWITCHOVER_FAILURES = 20  # requests refused while the router moves to the new leader (0.1 s apart)
LONGEST_GAP_S = 15.0


@pytest.fixture(scope="module")
def rolling_stack() -> Iterator[StackUnderTest]:
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    with StackUnderTest(SPEC) as under_test:
        yield under_test


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
    assert "replacing" not in cli(rolling_stack, "up").stderr  # converged: a second up does nothing
