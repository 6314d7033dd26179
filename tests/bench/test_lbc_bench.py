"""Benchmark of the LBC (issue 3), run by `make bench`, not in CI: a table on stdout, JSON in
bench-results/lbc.json.

One session, one stack (conftest.py); each part runs BENCH_RUNS times (default 3) and the table gives
medians over the runs, next to a peer measured in the same session:

1. deploystack's way: `deploystack scale backend=4`, then `backend=2`, under a bounded load loop through
   the LBC: failed, resent and slow requests, and the wall time of each command.
2. the naive way, its peer: two more backend containers started by hand with a static upstream list
   (nginx is not reloaded, so they get no traffic), then the two original replicas removed under load,
   still without a reload: nginx keeps sending to their dead addresses until its passive checks give
   up, and it knows no other replica. `deploystack up` then brings the stack back to the spec.
3. latency of GET /api/health/ straight to one replica from inside the private network, through the LBC
   from that same place, and through the LBC from the host.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import Container
from docker.types import EndpointConfig, Mount
from ruamel.yaml import YAML

from deploystack import labels
from tests.bench.conftest import BenchStack, publish
from tests.conftest import REPO
from tests.load import LoadLoop

pytestmark = pytest.mark.docker

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
RESULTS_FILE = REPO / "bench-results" / "lbc.json"
PATH = "/api/health/"
APP = "backend"

THREADS = 4
SLOW_S = 1.0  # the e2e tests' bound for a replica that dies under load
WARMUP_REQUESTS = 200  # before the first change (connections made, caches warm)
SETTLE_REQUESTS = 400  # between growing and shrinking
AFTER_REQUESTS = 300  # after the last change
SCALE_MAX_REQUESTS, SCALE_MAX_SECONDS = 20_000, 300.0
# The naive way has an outage, and failed requests come back fast (502): a larger request budget.
NAIVE_MAX_REQUESTS, NAIVE_MAX_SECONDS = 100_000, 300.0
NAIVE_WINDOW_S = 5.0  # load kept on the broken stack before anyone repairs it
NAIVE_STOP_GRACE_S = 25  # the APC's stop_grace_period, as `docker compose` would stop the originals
HEALTHY_TIMEOUT_S = 180.0

LATENCY_COUNT, LATENCY_WARMUP, LATENCY_MAX_SECONDS = 2000, 100, 120.0
PROBE_FILE = Path(__file__).with_name("http_probe.py")


# -- load loop phases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """Where a load loop was at one moment; a phase is what happened between two marks."""

    requests: int
    failures: int
    retried: int


def mark(load: LoadLoop) -> Mark:
    result = load.result
    return Mark(len(result.latencies), len(result.failures), result.retried)


@dataclass(frozen=True)
class Phase:
    requests: int
    failed: int
    resent: int
    slow: int
    p99_ms: float
    failure_kinds: dict[str, int]


def phase(load: LoadLoop, start: Mark, end: Mark) -> Phase:
    result = load.result
    latencies = result.latencies[start.requests:end.requests]
    kinds = Counter(failure.split(":")[0] for failure in result.failures[start.failures:end.failures])
    return Phase(
        requests=end.requests - start.requests, failed=end.failures - start.failures,
        resent=end.retried - start.retried, slow=sum(latency > SLOW_S for latency in latencies),
        p99_ms=percentile(latencies, 99) * 1000, failure_kinds=dict(kinds),
    )


def exhausted(load: LoadLoop, max_requests: int, max_seconds: float) -> bool:
    """The loop ran out of its request or time budget: the last phase was cut short."""
    return load.result.total >= max_requests or time.monotonic() - load.started >= max_seconds


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def timed(action: Callable[[], object]) -> float:
    began = time.monotonic()
    action()
    return time.monotonic() - began


def hostname(container: Container) -> str:
    """What the APC's nginx sends back as X-Served-By."""
    return str(container.attrs["Config"]["Hostname"])


def replicas_in_spec(stack: BenchStack) -> int:
    return int(YAML().load(stack.spec)["apc"]["apps"][APP]["replicas"])


# -- results, the table and the JSON -----------------------------------------------------------------


@dataclass
class ScaleRun:
    run: int
    grow_s: float
    shrink_s: float
    requests: int
    failed: int
    resent: int
    slow: int
    p99_ms: float
    new_replicas_serving: int
    failure_kinds: dict[str, int]
    cut_short: bool


@dataclass
class NaiveRun:
    run: int
    grow_s: float  # two containers created and started by hand, until healthy
    shrink_s: float  # the two original replicas stopped and removed
    requests: int  # from the first change to the end of the window that follows the removal
    failed: int
    resent: int
    slow: int
    p99_ms: float
    new_replicas_serving: int
    served_by_added: int  # requests in the access logs of the containers added by hand
    restore_s: float  # `deploystack up`, under the same load
    restore_requests: int
    restore_failed: int
    restore_slow: int
    failure_kinds: dict[str, int]
    cut_short: bool


@dataclass
class LatencyRun:
    run: int
    target: str
    p50_ms: float
    p99_ms: float
    mean_ms: float
    requests: int
    errors: dict[str, int]


@dataclass
class Results:
    scale: list[ScaleRun] = field(default_factory=list)
    naive: list[NaiveRun] = field(default_factory=list)
    latency: list[LatencyRun] = field(default_factory=list)


def medians(rows: list[Any]) -> dict[str, float]:
    """Median over runs of every numeric field of the rows (dataclasses), `run` excepted."""
    if not rows:
        return {}
    dicts = [asdict(row) for row in rows]
    numeric = [key for key, value in dicts[0].items()
               if isinstance(value, int | float) and not isinstance(value, bool) and key != "run"]
    return {key: statistics.median(d[key] for d in dicts) for key in numeric}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def summarize(results: Results, stack: BenchStack) -> dict[str, Any]:
    latency = {target.key: medians([r for r in results.latency if r.target == target.key])
               for target in latency_targets(stack)}
    scale, naive = medians(results.scale), medians(results.naive)
    direct = latency.get("direct", {})
    ratios: dict[str, float | None] = {}
    for key in ("lbc_private", "lbc_host"):
        for stat in ("p50_ms", "p99_ms"):
            ratios[f"{key}/direct {stat}"] = ratio(latency.get(key, {}).get(stat), direct.get(stat))
    for stat in ("grow_s", "shrink_s"):
        ratios[f"deploystack/naive {stat}"] = ratio(scale.get(stat), naive.get(stat))
    return {
        "benchmark": "lbc (issue 3)",
        "project": stack.project,
        "runs_wanted": RUNS,
        "complete": all(len(rows) == RUNS for rows in (results.scale, results.naive))
        and len(results.latency) == RUNS * len(latency_targets(stack)),
        "settings": {
            "path": PATH, "threads": THREADS, "slow_s": SLOW_S, "warmup_requests": WARMUP_REQUESTS,
            "settle_requests": SETTLE_REQUESTS, "after_requests": AFTER_REQUESTS,
            "naive_window_s": NAIVE_WINDOW_S, "latency_requests": LATENCY_COUNT,
            "latency_warmup": LATENCY_WARMUP,
        },
        "environment": environment(stack),
        "runs": {"deploystack_scale": [asdict(r) for r in results.scale],
                 "naive": [asdict(r) for r in results.naive],
                 "latency": [asdict(r) for r in results.latency]},
        "medians": {"deploystack_scale": scale, "naive": naive, "latency": latency},
        "ratios": ratios,
    }


def environment(stack: BenchStack) -> dict[str, Any]:
    def git(*args: str) -> str:
        run = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return run.stdout.strip()

    return {
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "docker": stack.docker.version().get("Version", "?"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(git("status", "--porcelain")),
    }


def table(report: dict[str, Any], stack: BenchStack) -> str:
    def num(value: float | None, digits: int = 2) -> str:
        if value is None or value != value:  # None or NaN
            return "-"
        if isinstance(value, int):
            return str(value)
        return f"{value:.{digits or (0 if value.is_integer() else 1)}f}"  # a median of two counts may end in .5

    env, scale, naive = report["environment"], report["medians"]["deploystack_scale"], report["medians"]["naive"]
    lines = [
        f"LBC benchmark, project {report['project']}: medians of {RUNS} run(s); {env['cpu_count']} CPUs, "
        f"{env['date']}, commit {env['commit']}{' (dirty)' if env['worktree_dirty'] else ''}",
        "",
        f"{APP} 2 -> 4 -> 2 under load ({THREADS} threads, GET {PATH} through the LBC from the host)",
        f"{'':50}{'deploystack':>12}{'naive':>12}{'ds/naive':>10}",
    ]
    rows: list[tuple[str, str, int]] = [
        ("grow 2 -> 4: wall time, s", "grow_s", 2),
        ("shrink to 2: wall time, s", "shrink_s", 2),
        ("requests during the change", "requests", 0),
        ("failed requests", "failed", 0),
        ("resent requests (connection closed at reload)", "resent", 0),
        (f"slow requests (> {SLOW_S:g} s)", "slow", 0),
        ("p99 latency during the change, ms", "p99_ms", 1),
        ("new replicas that served (of 2)", "new_replicas_serving", 0),
    ]
    for label, key, digits in rows:
        ratio_value = report["ratios"].get(f"deploystack/naive {key}")
        lines.append(f"{label:50}{num(scale.get(key), digits):>12}{num(naive.get(key), digits):>12}"
                     f"{num(ratio_value, 2):>10}")
    lines += [
        f"{'requests served by the replicas added by hand':50}{'':>12}{num(naive.get('served_by_added'), 0):>12}",
        f"{'naive, then deploystack up: wall time, s':50}{'':>12}{num(naive.get('restore_s'), 2):>12}",
        f"{'  failed requests during that up':50}{'':>12}{num(naive.get('restore_failed'), 0):>12}",
        f"{'  slow requests during that up':50}{'':>12}{num(naive.get('restore_slow'), 0):>12}",
        "  naive: grow = 2 containers started by hand until healthy (LBC untouched); shrink = the 2",
        f"  original replicas stopped and removed, no reload; its requests include {NAIVE_WINDOW_S:g} s of load after.",
        "",
        f"GET {PATH}: {LATENCY_COUNT} sequential requests on one kept-alive connection "
        f"(after {LATENCY_WARMUP} warm-up)",
        f"{'':58}{'p50 ms':>9}{'p99 ms':>9}{'p50/dir':>9}{'p99/dir':>9}",
    ]
    for target in latency_targets(stack):
        m = report["medians"]["latency"].get(target.key, {})
        r50 = 1.0 if target.key == "direct" else report["ratios"].get(f"{target.key}/direct p50_ms")
        r99 = 1.0 if target.key == "direct" else report["ratios"].get(f"{target.key}/direct p99_ms")
        lines.append(f"{target.label:58}{num(m.get('p50_ms'), 3):>9}{num(m.get('p99_ms'), 3):>9}"
                     f"{num(r50, 2):>9}{num(r99, 2):>9}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def results(stack: BenchStack) -> Iterator[Results]:
    """Collects every run; at the end, prints the table and writes the JSON, whatever failed."""
    collected = Results()
    yield collected
    report = summarize(collected, stack)
    publish(report, table(report, stack), RESULTS_FILE)


# -- 3. latency: direct vs through the LBC -----------------------------------------------------------


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    inside: bool  # run from the probe container on the private network, else from the host
    args: dict[str, Any]


def latency_targets(stack: BenchStack) -> list[Target]:
    def args(scheme: str, host: str, port: int, host_header: str) -> dict[str, Any]:
        return {"scheme": scheme, "host": host, "port": port, "host_header": host_header, "path": PATH,
                "count": LATENCY_COUNT, "warmup": LATENCY_WARMUP, "max_seconds": LATENCY_MAX_SECONDS}

    replica = stack.replica_name(APP, 1)
    return [
        # `backend` is in the app's ALLOWED_HOSTS (a container name is not).
        Target("direct", f"direct to {replica}:8000 (private network)", True,
               args("http", replica, 8000, APP)),
        Target("lbc_private", "LBC over HTTPS, from the private network (lbc:443)", True,
               args("https", "lbc", 443, "localhost")),
        Target("lbc_host", f"LBC over HTTPS, from the host ({stack.https.removeprefix('https://')})", False,
               args("https", "127.0.0.1", int(stack.https.rsplit(":", 1)[1]), "localhost")),
    ]


def run_probe(probe: Container, target: Target) -> dict[str, Any]:
    argument = json.dumps(target.args)
    if target.inside:
        code, (out, err) = probe.exec_run(["python3", "-c", PROBE_FILE.read_text(), argument], demux=True)
        stdout, stderr = (out or b"").decode(), (err or b"").decode()
    else:
        done = subprocess.run([sys.executable, str(PROBE_FILE), argument], capture_output=True, text=True,
                              timeout=LATENCY_MAX_SECONDS + 30)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    assert code == 0, f"probe of {target.key} failed ({code}): {stderr}"
    return dict(json.loads(stdout))


def test_latency_direct_vs_through_the_lbc(stack: BenchStack, probe: Container, results: Results) -> None:
    targets = latency_targets(stack)
    for run in range(1, RUNS + 1):
        shift = (run - 1) % len(targets)  # each target goes first once in a while: no order bias
        for target in targets[shift:] + targets[:shift]:
            measured = run_probe(probe, target)
            latencies: list[float] = measured["latencies"]
            results.latency.append(LatencyRun(
                run=run, target=target.key, p50_ms=percentile(latencies, 50) * 1000,
                p99_ms=percentile(latencies, 99) * 1000,
                mean_ms=statistics.fmean(latencies) * 1000 if latencies else float("nan"),
                requests=len(latencies), errors=measured["errors"],
            ))
    errors = [(r.run, r.target, r.errors) for r in results.latency if r.errors]
    assert not errors, f"failed requests in latency runs: {errors}"


# -- 1. deploystack's way ----------------------------------------------------------------------------


def test_deploystack_scale_under_load(stack: BenchStack, results: Results) -> None:
    for run in range(1, RUNS + 1):
        before = {hostname(c) for c in stack.running(APP)}
        assert len(before) == 2 and replicas_in_spec(stack) == 2
        with LoadLoop(stack.https + PATH, threads=THREADS, max_requests=SCALE_MAX_REQUESTS,
                      max_seconds=SCALE_MAX_SECONDS) as load:
            load.wait_for(WARMUP_REQUESTS)
            start = mark(load)
            grow_s = timed(lambda: stack.cli("scale", f"{APP}=4"))
            added = {hostname(c) for c in stack.running(APP)} - before
            load.wait_for(load.result.total + SETTLE_REQUESTS)
            serving = len(added & load.result.served_by)
            shrink_s = timed(lambda: stack.cli("scale", f"{APP}=2"))
            load.wait_for(load.result.total + AFTER_REQUESTS)
            end = mark(load)
            cut_short = exhausted(load, SCALE_MAX_REQUESTS, SCALE_MAX_SECONDS)
        change = phase(load, start, end)
        results.scale.append(ScaleRun(
            run=run, grow_s=grow_s, shrink_s=shrink_s, requests=change.requests, failed=change.failed,
            resent=change.resent, slow=change.slow, p99_ms=change.p99_ms, new_replicas_serving=serving,
            failure_kinds=change.failure_kinds, cut_short=cut_short,
        ))
        assert len(added) == 2, f"scale {APP}=4 left {len(before | added)} replicas"
        assert len(stack.running(APP)) == 2 and replicas_in_spec(stack) == 2
    dropped = [(r.run, r.failed, r.failure_kinds) for r in results.scale if r.failed]
    assert not dropped, f"deploystack scale dropped requests (run, count, kinds): {dropped}"


# -- 2. the naive way --------------------------------------------------------------------------------


def start_replica_by_hand(stack: BenchStack, template: Container, number: int) -> Container:
    """One more replica as `docker run` would make it, copied from an existing one: the same image,
    command, environment, labels (but its own container number, so that `deploystack up` sees one
    replica too many and removes it), mounts, health check, restart policy and network with its
    aliases, under a new name. The LBC is not told."""
    config, host = template.attrs["Config"], template.attrs["HostConfig"]
    networks = template.attrs["NetworkSettings"]["Networks"]
    short_id = (template.id or "")[:12]

    def aliases(endpoint: dict[str, Any]) -> list[str]:
        return [a for a in endpoint.get("Aliases") or [] if a != short_id]  # Docker adds the id itself

    first, *others = networks
    container = stack.docker.containers.create(
        config["Image"], command=config["Cmd"], name=f"{stack.project}-{APP}-naive-{number}",
        environment=config["Env"], labels={**config["Labels"], labels.NUMBER: str(number)},
        healthcheck=config.get("Healthcheck"), restart_policy=host["RestartPolicy"],
        mounts=[Mount(target=m["Target"], source=m["Source"], type=m["Type"], read_only=m.get("ReadOnly", False))
                for m in host.get("Mounts") or []],
        network=first, networking_config={first: EndpointConfig(
            version=stack.docker.api._version, aliases=aliases(networks[first]))},
    )
    for name in others:
        stack.docker.networks.get(name).connect(container, aliases=aliases(networks[name]))
    container.start()
    return container


def wait_healthy(containers: list[Container], timeout_s: float = HEALTHY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(containers)
    while pending:
        for container in list(pending):
            container.reload()
            state = container.attrs["State"]
            if (state.get("Health") or {}).get("Status") == "healthy":
                pending.remove(container)
            elif state.get("Status") in ("exited", "dead"):
                raise AssertionError(f"{container.name} stopped: {container.logs(tail=20).decode()}")
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {timeout_s:.0f}s: {[c.name for c in pending]}")
        time.sleep(0.2)


def requests_served(container: Container) -> int:
    """GETs of the benchmark's path in the container's nginx access log (its stdout)."""
    log = container.logs(stdout=True, stderr=False).decode(errors="replace")
    return sum(f'"GET {PATH} ' in line for line in log.splitlines())


def assert_back_to_spec(stack: BenchStack, served_by: set[str]) -> None:
    """After `deploystack up`: the spec's replicas, healthy, serving through the LBC, and a second
    `up` has nothing left to do."""
    containers = stack.containers(APP)
    names = sorted(c.name or "" for c in containers)
    assert names == [stack.replica_name(APP, 1), stack.replica_name(APP, 2)], names
    for container in containers:
        state = container.attrs["State"]
        assert state["Status"] == "running" and state["Health"]["Status"] == "healthy", (container.name, state)
    assert {hostname(c) for c in containers} <= served_by, "the restored replicas serve through the LBC"
    again = stack.cli("up")
    assert "nothing changed" in again.stdout, f"a second up still changed things:\n{again.stdout}{again.stderr}"


def naive_run(stack: BenchStack, run: int) -> tuple[NaiveRun, set[str]]:
    """One naive change under load, then `deploystack up` under the same load; returns what was
    measured and the replicas that served (to check the restored ones among them)."""
    originals = stack.running(APP)
    assert [c.name for c in originals] == [stack.replica_name(APP, 1), stack.replica_name(APP, 2)]
    with LoadLoop(stack.https + PATH, threads=THREADS, max_requests=NAIVE_MAX_REQUESTS,
                  max_seconds=NAIVE_MAX_SECONDS) as load:
        load.wait_for(WARMUP_REQUESTS)
        start = mark(load)
        began = time.monotonic()
        added = [start_replica_by_hand(stack, originals[0], number) for number in (3, 4)]
        wait_healthy(added)
        grow_s = time.monotonic() - began
        load.wait_for(load.result.total + SETTLE_REQUESTS)
        began = time.monotonic()
        for container in originals:  # one after the other, as a scale-down under nginx's feet
            container.stop(timeout=NAIVE_STOP_GRACE_S)
            container.remove()
        shrink_s = time.monotonic() - began
        time.sleep(NAIVE_WINDOW_S)
        broken = mark(load)
        for container in added:
            container.reload()
        served_by_added = sum(requests_served(c) for c in added)
        serving = len({hostname(c) for c in added} & load.result.served_by)
        restore_s = timed(lambda: stack.cli("up"))
        load.wait_for(load.result.total + AFTER_REQUESTS)
        end = mark(load)
        cut_short = exhausted(load, NAIVE_MAX_REQUESTS, NAIVE_MAX_SECONDS)
    change, restore = phase(load, start, broken), phase(load, broken, end)
    return NaiveRun(
        run=run, grow_s=grow_s, shrink_s=shrink_s, requests=change.requests, failed=change.failed,
        resent=change.resent, slow=change.slow, p99_ms=change.p99_ms, new_replicas_serving=serving,
        served_by_added=served_by_added, restore_s=restore_s, restore_requests=restore.requests,
        restore_failed=restore.failed, restore_slow=restore.slow,
        failure_kinds=dict(Counter(change.failure_kinds) + Counter(restore.failure_kinds)), cut_short=cut_short,
    ), set(load.result.served_by)


def test_naive_peer_static_upstreams_no_reload(stack: BenchStack, results: Results) -> None:
    for run in range(1, RUNS + 1):
        outcome, served_by = naive_run(stack, run)
        results.naive.append(outcome)
        assert_back_to_spec(stack, served_by)
    served = [(r.run, r.served_by_added) for r in results.naive if r.served_by_added]
    assert not served, f"replicas nginx was never told about served requests (run, count): {served}"
