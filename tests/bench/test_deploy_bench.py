"""Benchmark of rolling deploys (issue 6), run by `make bench`, not in CI: a table on stdout, JSON in
bench-results/deploy.json.

A stack of its own: just the backend (from the default blueprint's source folder), PostgreSQL with no
replica, and the LBC. For 2 and then 4 backend replicas (`deploystack scale backend=N`), each way below
runs BENCH_RUNS times (default 3; the side that goes first alternates from run to run) under a bounded
load loop (4 threads, GET /api/version/ through the LBC from the host), and the table gives medians:

1. deploystack: `deploystack deploy backend` with nothing changed. It still replaces every replica, one
   at a time (engine/rollout.py); its wall time includes the image check and the migrations it runs first.
2. the naive recreate, its peer: stop all, start all. Every backend replica is stopped at once, as
   `docker compose stop` does (SIGTERM, then up to the APC's stop grace period), and removed; then
   `deploystack up` creates them again from the same definition, waits until they are healthy and reloads
   the LBC (their addresses are new). Fresh containers on both sides, so both end in the same state.

Wall time is the command's (or the stop + remove + up's); the requests counted are those from the
start of the change until AFTER_REQUESTS more were made after it ended; the failure window is the time
from the first failed request to the last (the outage, as the clients saw it). After each run the stack
must be the spec's: its replicas healthy and serving, and `deploystack up` has nothing left to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from deploystack.testing import StackUnderTest
from tests.bench.conftest import BenchStack, publish
from tests.bench.test_lbc_bench import (
    SLOW_S,
    environment,
    exhausted,
    hostname,
    mark,
    medians,
    phase,
    ratio,
    timed,
)
from tests.conftest import BLUEPRINTS, REPO
from tests.load import LoadLoop

pytestmark = pytest.mark.docker

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
RESULTS_FILE = REPO / "bench-results" / "deploy.json"
APP, PATH = "backend", "/api/version/"
REPLICAS = (2, 4)
WAYS = ("deploystack", "naive")

THREADS = 4
WARMUP_REQUESTS = 200  # before the change (connections made, caches warm)
AFTER_REQUESTS = 300  # after it: the stack serves again
# The naive way has an outage, and failed requests come back fast (502): a large request budget.
MAX_REQUESTS, MAX_SECONDS = 100_000, 600.0
STOP_GRACE_S = 25  # the APC's stop_grace_period, as `docker compose stop` would use it

SPEC = f"""\
project: deploybench
apc:
  apps:
    {APP}:
      source: {BLUEPRINTS / "default" / "apps" / "backend"}
      wsgi: backend.wsgi:application
      replicas: {REPLICAS[0]}
      routes: [/api/]
acc: {{redis: false, memcached: false, rabbitmq: false}}
mmc: false
dbc: {{replicas: 0}}
cdc: {{enabled: false}}
"""


# -- results, the table and the JSON -----------------------------------------------------------------


@dataclass
class RolloutRun:
    run: int
    replicas: int
    way: str
    wall_s: float
    requests: int
    failed: int
    resent: int
    slow: int
    p99_ms: float
    failure_window_s: float  # from the first failed request's end to the last's: the outage, roughly
    replaced: int  # replicas running in new containers afterwards
    new_serving: int  # of those, how many served a request of the load loop
    failure_kinds: dict[str, int]
    cut_short: bool


@dataclass
class Results:
    runs: list[RolloutRun] = field(default_factory=list)

    def of(self, replicas: int, way: str) -> list[RolloutRun]:
        return [r for r in self.runs if r.replicas == replicas and r.way == way]


def summarize(results: Results, stack: BenchStack) -> dict[str, Any]:
    meds = {f"{n}": {way: medians(results.of(n, way)) for way in WAYS} for n in REPLICAS}
    ratios = {f"{n} deploystack/naive {stat}": ratio(meds[f"{n}"]["deploystack"].get(stat),
                                                     meds[f"{n}"]["naive"].get(stat))
              for n in REPLICAS for stat in ("wall_s", "failed", "failure_window_s", "p99_ms")}
    return {
        "benchmark": "deploy (issue 6)",
        "project": stack.project,
        "runs_wanted": RUNS,
        "complete": all(len(results.of(n, way)) == RUNS for n in REPLICAS for way in WAYS),
        "settings": {"path": PATH, "threads": THREADS, "slow_s": SLOW_S, "warmup_requests": WARMUP_REQUESTS,
                     "after_requests": AFTER_REQUESTS, "naive_stop_grace_s": STOP_GRACE_S},
        "environment": environment(stack),
        "runs": [asdict(r) for r in results.runs],
        "medians": meds,
        "ratios": ratios,
    }


def table(report: dict[str, Any]) -> str:
    def num(value: float | None, digits: int) -> str:
        if value is None or value != value:  # None or NaN
            return "-"
        return f"{value:.{digits}f}"

    env = report["environment"]
    lines = [
        f"Deploy benchmark, project {report['project']}: medians of {RUNS} run(s); {env['cpu_count']} CPUs, "
        f"{env['date']}, commit {env['commit']}{' (dirty)' if env['worktree_dirty'] else ''}",
        "",
        f"every {APP} replica replaced under load ({THREADS} threads, GET {PATH} through the LBC from the host)",
        f"{'':42}" + "".join(f"{f'{n} replicas':^36}" for n in REPLICAS),
        f"{'':42}" + f"{'deploystack':>12}{'naive':>12}{'ds/naive':>12}" * len(REPLICAS),
    ]
    rows = [("wall time, s", "wall_s", 1), ("requests during the change", "requests", 0),
            ("failed requests", "failed", 0), ("first to last failed request, s", "failure_window_s", 1),
            ("resent requests (closed at reload)", "resent", 0),
            (f"slow requests (> {SLOW_S:g} s)", "slow", 0), ("p99 latency, ms", "p99_ms", 1),
            ("replicas in new containers", "replaced", 0), ("  of which served the load", "new_serving", 0)]
    for label, key, digits in rows:
        line = f"{label:42}"
        for n in REPLICAS:
            m = report["medians"][f"{n}"]
            r = report["ratios"].get(f"{n} deploystack/naive {key}")
            line += f"{num(m['deploystack'].get(key), digits):>12}{num(m['naive'].get(key), digits):>12}"
            line += f"{num(r, 2):>12}"
        lines.append(line)
    lines += [
        f"  deploystack: `deploystack deploy {APP}`, nothing changed; naive: every replica stopped at once",
        f"  (SIGTERM, grace {STOP_GRACE_S} s) and removed, then `deploystack up`. Requests: from the change's "
        f"start to {AFTER_REQUESTS} after its end.",
    ]
    return "\n".join(lines)


# -- the stack ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deploy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchStack]:
    spec = tmp_path_factory.mktemp("deploybench") / "deploystack.yaml"
    spec.write_text(SPEC)
    with StackUnderTest(spec) as under_test:
        yield BenchStack(under_test, docker.from_env())


@pytest.fixture(scope="module")
def results(deploy_stack: BenchStack) -> Iterator[Results]:
    """Collects every run; at the end, prints the table and writes the JSON, whatever failed."""
    collected = Results()
    yield collected
    report = summarize(collected, deploy_stack)
    publish(report, table(report), RESULTS_FILE)


# -- the two ways ------------------------------------------------------------------------------------


def deploystack_deploy(stack: BenchStack) -> None:
    stack.cli("deploy", APP)


def naive_recreate(stack: BenchStack) -> None:
    """Stop all (at once, each with the stop grace period), remove them, start all (`deploystack up`)."""
    def stop(container: Container) -> None:
        container.stop(timeout=STOP_GRACE_S)
        container.remove()

    replicas = stack.running(APP)
    with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
        list(pool.map(stop, replicas))
    stack.cli("up")


WAY: dict[str, Callable[[BenchStack], None]] = {"deploystack": deploystack_deploy, "naive": naive_recreate}


def assert_serving_replicas(stack: BenchStack, replicas: int) -> list[Container]:
    """Exactly the spec's replicas, by name, running and healthy."""
    containers = stack.containers(APP)
    names = sorted(c.name or "" for c in containers)
    assert names == sorted(stack.replica_name(APP, n) for n in range(1, replicas + 1)), names
    for container in containers:
        state = container.attrs["State"]
        assert state["Status"] == "running" and state["Health"]["Status"] == "healthy", (container.name, state)
    return containers


def measure(stack: BenchStack, way: str, replicas: int, run: int) -> RolloutRun:
    before = {c.id for c in assert_serving_replicas(stack, replicas)}
    with LoadLoop(stack.https + PATH, threads=THREADS, max_requests=MAX_REQUESTS, max_seconds=MAX_SECONDS) as load:
        load.wait_for(WARMUP_REQUESTS)
        start = mark(load)
        wall_s = timed(lambda: WAY[way](stack))
        load.wait_for(load.result.total + AFTER_REQUESTS)
        end = mark(load)
        cut_short = exhausted(load, MAX_REQUESTS, MAX_SECONDS)
    change = phase(load, start, end)
    after = [c for c in assert_serving_replicas(stack, replicas) if c.id not in before]
    again = stack.cli("up")
    assert "nothing changed" in again.stdout, f"after {way}, up still changed things:\n{again.stdout}{again.stderr}"
    return RolloutRun(
        run=run, replicas=replicas, way=way, wall_s=wall_s, requests=change.requests, failed=change.failed,
        resent=change.resent, slow=change.slow, p99_ms=change.p99_ms,
        failure_window_s=failure_window(load.result.failed_at[start.failures:end.failures]), replaced=len(after),
        new_serving=len({hostname(c) for c in after} & load.result.served_by),
        failure_kinds=change.failure_kinds, cut_short=cut_short,
    )


def failure_window(failed_at: list[float]) -> float:
    return max(failed_at) - min(failed_at) if failed_at else 0.0


@pytest.mark.parametrize("replicas", REPLICAS)
def test_rolling_deploy_vs_naive_recreate(deploy_stack: BenchStack, results: Results, replicas: int) -> None:
    deploy_stack.cli("scale", f"{APP}={replicas}")
    for run in range(1, RUNS + 1):
        order = WAYS if run % 2 else WAYS[::-1]
        for way in order:
            results.runs.append(measure(deploy_stack, way, replicas, run))
    mine = [r for r in results.runs if r.replicas == replicas]
    not_replaced = [(r.way, r.run, r.replaced, r.new_serving) for r in mine if r.new_serving != replicas]
    assert not not_replaced, f"replicas not replaced, or not serving after (way, run, new, serving): {not_replaced}"
    cut = [(r.way, r.run) for r in mine if r.cut_short]
    assert not cut, f"the load loop ran out of budget before the change was over (way, run): {cut}"
    dropped = [(r.run, r.failed, r.failure_kinds) for r in results.of(replicas, "deploystack") if r.failed]
    assert not dropped, f"deploystack deploy dropped requests (run, count, kinds): {dropped}"

