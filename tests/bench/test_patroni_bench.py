"""Benchmark of DBC high availability on Patroni (issue 16), run by `make bench`, not in CI: a table on
stdout, JSON in bench-results/patroni.json.

One stack: tests/e2e/test_patroni.py's spec (three PostgreSQL 17 nodes under Patroni, three etcd members,
the router, the backend app with one replica), and the `probe` container on the private network. For
synchronous mode on, then off (Patroni's `synchronous_mode`, changed with `patronictl edit-config`):

1. commit latency and replication lag of single-row commits, from the probe straight to the leader and one
   standby (db_probe.py; one INSERT per sample, the standby polled until the row is visible);
2. failover: FAILOVER_RUNS times, the leader's container killed while POSTs go through the LBC
   (tests/e2e/test_patroni.py's WriteLoad); the time from the kill to the first acknowledged write after
   the outage, the failed requests, the acknowledged rows missing afterwards. The killed node is started
   again and the next kill waits for a healthy cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from deploystack.testing import StackUnderTest
from tests.bench.conftest import BenchStack, probe_in, publish
from tests.bench.test_db_bench import credentials, run_in_probe
from tests.bench.test_lbc_bench import environment, medians, percentile
from tests.conftest import REPO, eventually
from tests.e2e.test_patroni import SPEC, healthy_cluster, kill_under_write_load, members, missing_rows

pytestmark = pytest.mark.docker

RESULTS_FILE = REPO / "bench-results" / "patroni.json"
FAILOVER_RUNS = int(os.environ.get("BENCH_FAILOVER_RUNS", "5"))
LAG_COUNT, LAG_WARMUP, LAG_MAX_SECONDS, LAG_TIMEOUT_S = 500, 20, 120.0, 10.0
NODES = 3
MODES = ("synchronous", "asynchronous")


@dataclass
class LatencyRun:
    mode: str
    commit_p50_ms: float
    commit_p99_ms: float
    lag_p50_ms: float
    lag_p99_ms: float
    samples: int
    timeouts: int


@dataclass
class FailoverRun:
    mode: str
    run: int
    killed: str
    failover_s: float  # kill -> first acknowledged write after the outage
    failed_requests: int
    acknowledged: int
    lost: int  # acknowledged rows missing afterwards


@dataclass
class Results:
    latency: list[LatencyRun] = field(default_factory=list)
    failover: list[FailoverRun] = field(default_factory=list)


@pytest.fixture(scope="module")
def ha_stack() -> Iterator[BenchStack]:
    with StackUnderTest(SPEC) as under_test:
        yield BenchStack(under_test, docker.from_env())


@pytest.fixture(scope="module")
def ha_probe(ha_stack: BenchStack) -> Iterator[Container]:
    with probe_in(ha_stack) as container:
        yield container


@pytest.fixture(scope="module")
def results(ha_stack: BenchStack) -> Iterator[Results]:
    collected = Results()
    yield collected
    report = summarize(collected, ha_stack)
    publish(report, table(report), RESULTS_FILE)


def healthy(stack: BenchStack) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = eventually(lambda: healthy_cluster(stack.under_test, NODES),
                                                  "a healthy cluster", timeout=180)
    return found


def set_mode(stack: BenchStack, mode: str) -> None:
    """Patroni's synchronous_mode on or off in the DCS, then wait until the members show it."""
    leader = next(name for name, m in healthy(stack).items() if m["role"] == "leader")
    value = "true" if mode == "synchronous" else "false"
    code, out = stack.under_test.exec(leader, ["patronictl", "-c", "/etc/deploystack/patroni.yml", "edit-config",
                                               "--force", "--set", f"synchronous_mode={value}"])
    assert code == 0, out

    def shown() -> bool:
        has_sync = any(m["role"] == "sync_standby" for m in members(stack.under_test).values())
        return has_sync == (mode == "synchronous")
    eventually(shown, f"{mode} mode in the cluster", timeout=60)


@pytest.mark.parametrize("mode", MODES)
def test_1_commit_latency_and_lag(ha_stack: BenchStack, ha_probe: Container, results: Results, mode: str) -> None:
    set_mode(ha_stack, mode)
    found = healthy(ha_stack)
    leader = next(name for name, m in found.items() if m["role"] == "leader")
    standby = sorted(name for name, m in found.items() if m["role"] != "leader")[0]
    measured = run_in_probe(ha_probe, {
        "primary": leader, "replica": standby, **credentials(ha_stack), "count": LAG_COUNT,
        "warmup": LAG_WARMUP, "max_seconds": LAG_MAX_SECONDS, "timeout_s": LAG_TIMEOUT_S,
    })
    lags, commits = measured["lags"], measured["commits"]
    results.latency.append(LatencyRun(
        mode=mode, commit_p50_ms=percentile(commits, 50) * 1000, commit_p99_ms=percentile(commits, 99) * 1000,
        lag_p50_ms=percentile(lags, 50) * 1000, lag_p99_ms=percentile(lags, 99) * 1000, samples=len(lags),
        timeouts=measured["timeouts"],
    ))
    assert measured["timeouts"] == 0 and len(lags) == LAG_COUNT, measured["timeouts"]


@pytest.mark.parametrize("mode", MODES)
def test_2_failover_under_write_load(ha_stack: BenchStack, results: Results, mode: str) -> None:
    set_mode(ha_stack, mode)
    for run in range(1, FAILOVER_RUNS + 1):
        leader = next(name for name, m in healthy(ha_stack).items() if m["role"] == "leader")
        container, load, failover_s = kill_under_write_load(ha_stack.under_test, leader)
        lost = missing_rows(ha_stack.under_test, load)
        results.failover.append(FailoverRun(
            mode=mode, run=run, killed=leader, failover_s=failover_s, failed_requests=len(load.failed),
            acknowledged=len(load.acked), lost=len(lost),
        ))
        container.start()  # it rejoins as a standby; the next run waits for that
    healthy(ha_stack)
    if mode == "synchronous":
        assert all(r.lost == 0 for r in results.failover if r.mode == mode), results.failover


# -- the report --------------------------------------------------------------------------------------


def summarize(results: Results, stack: BenchStack) -> dict[str, Any]:
    failover: dict[str, dict[str, float]] = {}
    for mode in MODES:
        times = [r.failover_s for r in results.failover if r.mode == mode]
        failover[mode] = {"p50_s": percentile(times, 50), "max_s": max(times, default=float("nan")),
                          "runs": len(times), "lost_total": sum(r.lost for r in results.failover if r.mode == mode),
                          "failed_requests_median": medians([r for r in results.failover if r.mode == mode])
                          .get("failed_requests", float("nan"))}
    return {
        "benchmark": "patroni (issue 16)",
        "project": stack.project,
        "complete": len(results.latency) == len(MODES) and len(results.failover) == len(MODES) * FAILOVER_RUNS,
        "settings": {"failover_runs": FAILOVER_RUNS, "lag_samples": LAG_COUNT, "nodes": NODES},
        "environment": environment(stack),
        "runs": {"latency": [asdict(r) for r in results.latency], "failover": [asdict(r) for r in results.failover]},
        "latency": {r.mode: asdict(r) for r in results.latency},
        "failover": failover,
    }


def table(report: dict[str, Any]) -> str:
    def num(value: float | None, digits: int = 2) -> str:
        return "-" if value is None or value != value else f"{value:.{digits}f}"

    env = report["environment"]
    lines = [
        f"Patroni benchmark, project {report['project']}: {NODES} nodes; {env['cpu_count']} CPUs, {env['date']}, "
        f"commit {env['commit']}{' (dirty)' if env['worktree_dirty'] else ''}",
        "",
        f"1. single-row commits on the leader ({LAG_COUNT} samples after {LAG_WARMUP} warm-up, client on the "
        "private network)",
        f"{'mode':16}{'commit p50':>12}{'commit p99':>12}{'lag p50':>10}{'lag p99':>10}   (ms)",
    ]
    for mode in MODES:
        row = report["latency"].get(mode, {})
        lines.append(f"{mode:16}{num(row.get('commit_p50_ms'), 3):>12}{num(row.get('commit_p99_ms'), 3):>12}"
                     f"{num(row.get('lag_p50_ms'), 3):>10}{num(row.get('lag_p99_ms'), 3):>10}")
    lines += ["", f"2. leader killed under write load through the LBC ({FAILOVER_RUNS} kills per mode): kill -> "
              "first acknowledged write",
              f"{'mode':16}{'p50 s':>8}{'max s':>8}{'failed req (median)':>22}{'lost rows':>11}"]
    for mode in MODES:
        row = report["failover"].get(mode, {})
        lines.append(f"{mode:16}{num(row.get('p50_s'), 1):>8}{num(row.get('max_s'), 1):>8}"
                     f"{num(row.get('failed_requests_median'), 0):>22}{row.get('lost_total', '-'):>11}")
    return "\n".join(lines)
