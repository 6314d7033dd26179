"""Benchmark of the DBC (issue 4, item 6), run by `make bench`, not in CI: a table on stdout, JSON in
bench-results/db.json.

One session, one full stack of the default blueprint (conftest.py's `stack`, with db-primary and
db-replica-1, and the `probe` container from the backend's image on the private network); the parts run
in this order, because parts 2 and 3 share the replica count:

1. replication lag of single-row commits (BENCH_RUNS runs of LAG_COUNT samples): from the probe, one
   INSERT committed on db-primary, then db-replica-1 polled tightly until the row is visible
   (db_probe.py; no `docker exec` per sample). p50/p99 of the lag and of the commit itself.
2. catch-up of a new replica: db-primary filled with about BENCH_DB_MB (default 1000) MB, then
   `deploystack scale dbc=2` (the CLI); wall time from the command's start until db-replica-2 streams and
   has replayed up to the primary's LSN taken just before the command, and the command's own wall time.
3. read throughput: GET /api/notes/<id>/ through the LBC from the host, THREADS threads for
   THROUGHPUT_S s (tests/load.py's LoadLoop), with 1 replica (before part 2), 2 (after it), then 0
   (`deploystack scale dbc=0`); the X-DB-Alias of a few sequential reads tells who served them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from docker.models.containers import Container
from ruamel.yaml import YAML

from deploystack.operations.db import app_database
from deploystack.render.envfile import read_env
from deploystack.render.project import ENV_FILE
from deploystack.spec import load_stack
from tests.bench.conftest import BenchStack, publish
from tests.bench.test_lbc_bench import environment, medians, percentile, ratio
from tests.conftest import REPO
from tests.load import LoadLoop

pytestmark = pytest.mark.docker

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
RESULTS_FILE = REPO / "bench-results" / "db.json"
PROBE_FILE = Path(__file__).with_name("db_probe.py")

LAG_COUNT, LAG_WARMUP, LAG_MAX_SECONDS, LAG_TIMEOUT_S = 300, 20, 120.0, 10.0
DB_MB = int(os.environ.get("BENCH_DB_MB", "1000"))
ROW_BYTES = 1000  # repeat('x', 1000): under the TOAST threshold, stored as is (about 7 rows a page)
ROWS_PER_MB = 850  # measured: 1000-byte rows take about 1.2 kB each on disk with headers and free space
FILL_TIMEOUT_S, CATCH_UP_TIMEOUT_S = 900.0, 900.0
THREADS, THROUGHPUT_S, THROUGHPUT_MAX_REQUESTS = 4, 15.0, 200_000
ALIAS_SAMPLE = 60


@dataclass
class LagRun:
    run: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    commit_p50_ms: float
    commit_p99_ms: float
    samples: int
    timeouts: int


@dataclass
class CatchUpRun:
    run: int
    db_mb: float  # pg_database_size of the app database at the time of the scale
    catch_up_s: float  # command start -> db-replica-2 streaming and replayed to the primary's LSN
    scale_cli_s: float  # `deploystack scale dbc=2`, start to exit
    mb_per_s: float


@dataclass
class ThroughputRun:
    run: int
    replicas: int
    requests_per_s: float
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    aliases: dict[str, int]  # X-DB-Alias of ALIAS_SAMPLE sequential reads after the load


@dataclass
class Results:
    lag: list[LagRun] = field(default_factory=list)
    catch_up: list[CatchUpRun] = field(default_factory=list)
    throughput: list[ThroughputRun] = field(default_factory=list)


# -- helpers -----------------------------------------------------------------------------------------


def sql(stack: BenchStack, service: str, query: str) -> str:
    """One query as the postgres superuser in `service` (docker exec: fine outside the timed loops)."""
    database = load_stack(stack.spec).dbc.database
    code, out = stack.under_test.exec(service, ["psql", "-X", "-U", "postgres", "-d", database, "-qtAc", query])
    assert code == 0, f"{service}: {query}: {out}"
    return out.strip()


def db_replicas(stack: BenchStack) -> int:
    return int(YAML().load(stack.spec)["dbc"]["replicas"])


def scale_db(stack: BenchStack, replicas: int) -> None:
    if db_replicas(stack) != replicas:
        stack.cli("scale", f"dbc={replicas}")
    assert db_replicas(stack) == replicas


def credentials(stack: BenchStack) -> dict[str, str]:
    database = app_database(load_stack(stack.spec), None)  # the first app's role, on its database
    password = read_env(stack.under_test.target.output / ENV_FILE)[database.password_secret]
    return {"user": database.role, "password": password, "database": database.database}


def run_in_probe(probe: Container, args: dict[str, Any]) -> dict[str, Any]:
    code, (out, err) = probe.exec_run(["python3", "-c", PROBE_FILE.read_text(), json.dumps(args)], demux=True)
    stdout, stderr = (out or b"").decode(), (err or b"").decode()
    assert code == 0, f"db probe failed ({code}): {stderr}"
    return dict(json.loads(stdout))


@pytest.fixture(scope="module")
def results(stack: BenchStack) -> Iterator[Results]:
    """Collects every run; at the end, prints the table and writes the JSON, whatever failed."""
    collected = Results()
    yield collected
    report = summarize(collected, stack)
    publish(report, table(report), RESULTS_FILE)


@pytest.fixture(scope="module")
def note_id(stack: BenchStack) -> int:
    """A note to read back, written through the API, visible on the replica before reads are timed."""
    reply = requests.post(stack.https + "/api/notes/", json={"text": "bench"}, verify=False, timeout=10)
    assert reply.status_code == 201, reply.text
    return int(reply.json()["id"])


# -- 1. replication lag ------------------------------------------------------------------------------


def test_1_replication_lag_of_single_row_commits(stack: BenchStack, probe: Container, results: Results) -> None:
    scale_db(stack, 1)
    for run in range(1, RUNS + 1):
        measured = run_in_probe(probe, {
            "primary": "db-primary", "replica": "db-replica-1", **credentials(stack), "count": LAG_COUNT,
            "warmup": LAG_WARMUP, "max_seconds": LAG_MAX_SECONDS, "timeout_s": LAG_TIMEOUT_S,
        })
        lags, commits = measured["lags"], measured["commits"]
        results.lag.append(LagRun(
            run=run, p50_ms=percentile(lags, 50) * 1000, p99_ms=percentile(lags, 99) * 1000,
            max_ms=max(lags, default=float("nan")) * 1000, commit_p50_ms=percentile(commits, 50) * 1000,
            commit_p99_ms=percentile(commits, 99) * 1000, samples=len(lags), timeouts=measured["timeouts"],
        ))
    assert all(r.timeouts == 0 and r.samples == LAG_COUNT for r in results.lag), results.lag


# -- 3. read throughput (a helper for the three counts) -----------------------------------------------


def measure_throughput(stack: BenchStack, note: int, replicas: int, results: Results) -> None:
    scale_db(stack, replicas)
    path = f"/api/notes/{note}/"
    deadline = time.monotonic() + 60  # the note on every replica (the view would fall back to the primary)
    while stack.get(path).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    for run in range(1, RUNS + 1):
        with LoadLoop(stack.https + path, threads=THREADS, max_requests=THROUGHPUT_MAX_REQUESTS,
                      max_seconds=THROUGHPUT_S) as load:
            time.sleep(THROUGHPUT_S)
        elapsed = time.monotonic() - load.started
        done = load.result
        aliases = Counter(stack.get(path).headers.get("X-DB-Alias", "?") for _ in range(ALIAS_SAMPLE))
        results.throughput.append(ThroughputRun(
            run=run, replicas=replicas, requests_per_s=done.ok / elapsed, requests=done.total,
            failed=len(done.failures), p50_ms=percentile(done.latencies, 50) * 1000,
            p99_ms=percentile(done.latencies, 99) * 1000, aliases=dict(aliases),
        ))
    rows = [r for r in results.throughput if r.replicas == replicas]
    assert not any(r.failed for r in rows), [(r.run, r.failed) for r in rows]
    expected = {"default"} if replicas == 0 else {f"replica_{n}" for n in range(1, replicas + 1)}
    assert all(set(r.aliases) <= expected | {"default"} for r in rows), [r.aliases for r in rows]


def test_2_read_throughput_with_one_replica(stack: BenchStack, note_id: int, results: Results) -> None:
    measure_throughput(stack, note_id, 1, results)


# -- 2. catch-up of a new replica --------------------------------------------------------------------


def fill_primary(stack: BenchStack) -> None:
    rows = DB_MB * ROWS_PER_MB
    sql(stack, "db-primary", "DROP TABLE IF EXISTS bench_big; "
                             f"CREATE TABLE bench_big AS SELECT g, repeat('x', {ROW_BYTES}) AS body "
                             f"FROM generate_series(1, {rows}) g; CHECKPOINT")


def replica_caught_up(stack: BenchStack, lsn: str) -> bool:
    """db-replica-2 is up, in recovery, streaming, and has replayed at least to `lsn`."""
    try:
        answer = sql(stack, "db-replica-2",
                     "SELECT pg_is_in_recovery() AND coalesce(pg_last_wal_replay_lsn() >= "
                     f"'{lsn}'::pg_lsn, false) AND (SELECT count(*) FROM pg_stat_wal_receiver "
                     "WHERE status = 'streaming') = 1")
    except Exception:  # noqa: BLE001 -- not created yet, starting, or not accepting connections yet
        return False
    return answer == "t"


def test_3_catch_up_of_a_new_replica(stack: BenchStack, results: Results) -> None:
    for run in range(1, RUNS + 1):
        scale_db(stack, 1)
        fill_primary(stack)
        db_mb = int(sql(stack, "db-primary", "SELECT pg_database_size(current_database())")) / 1e6
        lsn = sql(stack, "db-primary", "SELECT pg_current_wal_lsn()")
        began = time.monotonic()
        finished: dict[str, float] = {}

        def command(finished: dict[str, float] = finished) -> None:
            stack.cli("scale", "dbc=2")
            finished["at"] = time.monotonic()

        cli_thread = threading.Thread(target=command, daemon=True)
        cli_thread.start()
        caught_up_at = None
        while time.monotonic() - began < CATCH_UP_TIMEOUT_S:
            if replica_caught_up(stack, lsn):
                caught_up_at = time.monotonic()
                break
            time.sleep(0.25)
        cli_thread.join(timeout=CATCH_UP_TIMEOUT_S)
        assert caught_up_at is not None, f"db-replica-2 not caught up after {CATCH_UP_TIMEOUT_S:.0f}s"
        assert "at" in finished, "deploystack scale dbc=2 failed or hung (see its output above)"
        catch_up_s = caught_up_at - began
        results.catch_up.append(CatchUpRun(run=run, db_mb=db_mb, catch_up_s=catch_up_s,
                                           scale_cli_s=finished["at"] - began, mb_per_s=db_mb / catch_up_s))
    sql(stack, "db-primary", "DROP TABLE IF EXISTS bench_big")


def test_4_read_throughput_with_two_replicas(stack: BenchStack, note_id: int, results: Results) -> None:
    measure_throughput(stack, note_id, 2, results)


def test_5_read_throughput_with_no_replica(stack: BenchStack, note_id: int, results: Results) -> None:
    measure_throughput(stack, note_id, 0, results)


# -- the report --------------------------------------------------------------------------------------


def summarize(results: Results, stack: BenchStack) -> dict[str, Any]:
    throughput = {str(n): medians([r for r in results.throughput if r.replicas == n]) for n in (0, 1, 2)}
    rps = {n: throughput[n].get("requests_per_s") for n in throughput}
    return {
        "benchmark": "db (issue 4)",
        "project": stack.project,
        "runs_wanted": RUNS,
        "complete": len(results.lag) == RUNS and len(results.catch_up) == RUNS
        and len(results.throughput) == 3 * RUNS,
        "settings": {"lag_samples": LAG_COUNT, "lag_warmup": LAG_WARMUP, "db_mb_wanted": DB_MB,
                     "row_bytes": ROW_BYTES, "threads": THREADS, "throughput_s": THROUGHPUT_S,
                     "alias_sample": ALIAS_SAMPLE},
        "environment": environment(stack),
        "runs": {"lag": [asdict(r) for r in results.lag], "catch_up": [asdict(r) for r in results.catch_up],
                 "throughput": [asdict(r) for r in results.throughput]},
        "medians": {"lag": medians(results.lag), "catch_up": medians(results.catch_up), "throughput": throughput},
        "ratios": {"rps 1 replica / 0": ratio(rps["1"], rps["0"]), "rps 2 replicas / 0": ratio(rps["2"], rps["0"])},
    }


def table(report: dict[str, Any]) -> str:
    def num(value: float | None, digits: int = 2) -> str:
        if value is None or value != value:  # None or NaN
            return "-"
        return f"{value:.{digits}f}"

    env, lag, catch = report["environment"], report["medians"]["lag"], report["medians"]["catch_up"]
    lines = [
        f"DB benchmark, project {report['project']}: medians of {RUNS} run(s); {env['cpu_count']} CPUs, "
        f"{env['date']}, commit {env['commit']}{' (dirty)' if env['worktree_dirty'] else ''}",
        "",
        f"1. replication lag, single-row INSERT commits on db-primary -> visible on db-replica-1 "
        f"({LAG_COUNT} samples after {LAG_WARMUP} warm-up, client on the private network)",
        f"{'':44}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
        f"{'commit -> row visible on the replica':44}{num(lag.get('p50_ms'), 3):>10}{num(lag.get('p99_ms'), 3):>10}"
        f"{num(lag.get('max_ms'), 3):>10}",
        f"{'the commit itself (INSERT round trip)':44}{num(lag.get('commit_p50_ms'), 3):>10}"
        f"{num(lag.get('commit_p99_ms'), 3):>10}",
        "",
        "2. catch-up of a new replica: `deploystack scale dbc=2` on a filled primary",
        f"{'database size at the scale, MB':44}{num(catch.get('db_mb'), 0):>10}",
        f"{'start -> db-replica-2 streaming at that LSN, s':44}{num(catch.get('catch_up_s'), 1):>10}",
        f"{'the scale command itself, s':44}{num(catch.get('scale_cli_s'), 1):>10}",
        f"{'MB/s (size / catch-up time)':44}{num(catch.get('mb_per_s'), 1):>10}",
        "",
        f"3. GET /api/notes/<id>/ through the LBC from the host, {THREADS} threads, {THROUGHPUT_S:g} s",
        f"{'db replicas':14}{'req/s':>10}{'vs 0':>8}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}  served by "
        f"(of {ALIAS_SAMPLE} reads, last run)",
    ]
    by_replicas = report["runs"]["throughput"]
    for n in ("0", "1", "2"):
        m = report["medians"]["throughput"].get(n, {})
        rps0 = report["medians"]["throughput"].get("0", {}).get("requests_per_s")
        last = [r for r in by_replicas if str(r["replicas"]) == n][-1:]
        served = ", ".join(f"{k} {v}" for k, v in sorted(last[0]["aliases"].items())) if last else "-"
        rps = m.get("requests_per_s")
        lines.append(f"{n:14}{num(rps, 1):>10}{num(ratio(rps, rps0)):>8}"
                     f"{num(m.get('p50_ms'), 2):>10}{num(m.get('p99_ms'), 2):>10}"
                     f"{num(m.get('failed'), 0):>8}  {served}")
    return "\n".join(lines)
