"""Benchmark of dbc.backups (issue 17), run by `make bench`, not in CI: a table on stdout, JSON in
bench-results/backups.json. Its own stack (tests/fixtures/projects/drill-bench: one Patroni node, the
repository on the stack's own SeaweedFS, zstd, encrypted), in this order:

1. archive lag under a write load: LOAD_S seconds of 1000-byte-row INSERTs in batches on the leader (each
   a committed transaction), the archiver sampled every second (pg_stat_archiver and the `.ready` files):
   the WAL written and archived per second, and how many segments wait to be archived (median, max).
2. backup throughput: the database filled to about BENCH_BACKUP_MB (default 200) MB, then
   `pgbackrest backup --type=full` in the backup service, timed: the database size / its wall time.
3. restore throughput: `deploystack db restore --backup LABEL --yes` of that backup, end to end (writers and
   the node stopped, restore, replay, Patroni leads, apps started), timed: the database size / its wall time;
   pgBackRest's own restore step alone (from the one-off's log) too.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploystack.testing import StackUnderTest
from tests.bench.conftest import publish
from tests.conftest import REPO, eventually

pytestmark = pytest.mark.docker

SPEC = REPO / "tests/fixtures/projects/drill-bench/deploystack.yaml"
RESULTS_FILE = REPO / "bench-results" / "backups.json"
DB_MB = int(os.environ.get("BENCH_BACKUP_MB", "200"))
LOAD_S, LOAD_BATCH_ROWS = 60.0, 2000
ROWS_PER_MB = 850  # 1000-byte rows: about 1.2 kB each on disk (tests/bench/test_db_bench.py measured it)
SEGMENT = 16 << 20


@pytest.fixture(scope="module")
def stack() -> Iterator[StackUnderTest]:
    with StackUnderTest(SPEC) as under_test:
        yield under_test


def cli(stack: StackUnderTest, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(stack.spec)],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, f"deploystack {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def sql(stack: StackUnderTest, query: str) -> str:
    code, out = stack.exec("db-node-1", ["psql", "-X", "-U", "postgres", "-d", "backend", "-v", "ON_ERROR_STOP=1",
                                         "-qtAc", query])
    assert code == 0, out
    return out.strip()


ARCHIVER = ("SELECT archived_count, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
            "(SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') FROM pg_stat_archiver")


def archive_lag(stack: StackUnderTest) -> dict[str, Any]:
    sql(stack, "CREATE TABLE IF NOT EXISTS load (id bigserial PRIMARY KEY, payload text)")
    writer = subprocess.Popen(
        ["docker", "exec", f"{stack.project}-db-node-1-1", "bash", "-c",
         f"end=$((SECONDS + {int(LOAD_S)})); while ((SECONDS < end)); do psql -X -q -U postgres -d backend -c "
         f"\"INSERT INTO load (payload) SELECT repeat('x', 1000) FROM generate_series(1, {LOAD_BATCH_ROWS})\"; done"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[tuple[float, int, int, int]] = []
    started = time.monotonic()
    while writer.poll() is None and time.monotonic() - started < LOAD_S + 60:
        archived, written, ready = (int(x) for x in sql(stack, ARCHIVER).split("|"))
        samples.append((time.monotonic() - started, archived, written, ready))
        time.sleep(1)
    assert writer.wait(timeout=60) == 0, writer.stderr.read() if writer.stderr else ""
    # Then until the archiver has caught up: how long the last segment waited after the load stopped.
    stopped = time.monotonic()
    sql(stack, "SELECT pg_switch_wal()")
    eventually(lambda: sql(stack, ARCHIVER).split("|")[2] == "0", "the archiver caught up", timeout=600)
    catch_up = time.monotonic() - stopped
    elapsed = samples[-1][0] - samples[0][0]
    waiting = [s[3] for s in samples]
    return {
        "load_s": round(elapsed, 1),
        "wal_written_mb_s": round((samples[-1][2] - samples[0][2]) / elapsed / 2**20, 2),
        "wal_archived_mb_s": round((samples[-1][1] - samples[0][1]) * SEGMENT / elapsed / 2**20, 2),
        "ready_segments_median": statistics.median(waiting),
        "ready_segments_max": max(waiting),
        "catch_up_after_load_s": round(catch_up, 1),
    }


def fill(stack: StackUnderTest, megabytes: int) -> int:
    """About `megabytes` MB more in the database (1000-byte rows, in 50 MB transactions); its size in bytes."""
    sql(stack, "CREATE TABLE IF NOT EXISTS fill (id bigserial PRIMARY KEY, payload text)")
    for _ in range(max(1, megabytes // 50)):
        # Random hex (about half compressible, as zstd sees it), not a repeated string zstd would erase.
        # The inner series' own column in the aggregate: with only the outer `g` in it, the aggregate
        # would belong to the outer query and the subquery would return 31 rows.
        sql(stack, "INSERT INTO fill (payload) SELECT (SELECT string_agg(md5(random()::text || i || g), '') "
                   f"FROM generate_series(1, 31) i) || 'xxxxxxxx' FROM generate_series(1, {50 * ROWS_PER_MB}) g")
    return int(sql(stack, "SELECT sum(pg_database_size(datname)) FROM pg_database"))


def test_archive_lag_and_backup_restore_throughput(stack: StackUnderTest) -> None:
    eventually(lambda: json.loads(cli(stack, "db", "backups", "--json"))["backups"], "the first backup", 300)
    lag = archive_lag(stack)
    print(f"\narchive lag: {lag}")  # each phase as it ends: a later failure keeps the earlier figures
    size = fill(stack, DB_MB)
    started = time.monotonic()
    code, out = stack.exec("backup", ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                                      "pgbackrest", "backup", "--type=full"])
    backup_s = time.monotonic() - started
    assert code == 0, out
    info = json.loads(cli(stack, "db", "backups", "--json"))
    newest = info["backups"][-1]
    print(f"full backup of {size / 2**20:.0f} MB: {backup_s:.1f} s ({newest['repo_size'] / 2**20:.0f} MB stored)")
    started = time.monotonic()
    out = cli(stack, "db", "restore", "--backup", newest["label"], "--yes")
    restore_s = time.monotonic() - started
    assert int(sql(stack, "SELECT count(*) FROM fill")) >= (DB_MB // 50) * 50 * ROWS_PER_MB
    mb = size / 2**20
    report = {
        "database_mb": round(mb, 1), "repository_mb": round(newest["repo_size"] / 2**20, 1),
        "archive_lag": lag,
        "backup_s": round(backup_s, 1), "backup_mb_s": round(mb / backup_s, 1),
        "restore_s": round(restore_s, 1), "restore_mb_s": round(mb / restore_s, 1),
        "cpu_count": os.cpu_count(),
    }
    text = "\n".join([
        f"dbc.backups benchmark: a {mb:.0f} MB database (one Patroni node, repository on the stack's SeaweedFS, "
        "zstd, aes-256-cbc)",
        f"archive under load ({lag['load_s']} s): WAL written {lag['wal_written_mb_s']} MB/s, archived "
        f"{lag['wal_archived_mb_s']} MB/s; segments waiting: median {lag['ready_segments_median']}, max "
        f"{lag['ready_segments_max']}; caught up {lag['catch_up_after_load_s']} s after the load",
        f"full backup: {backup_s:.1f} s = {mb / backup_s:.1f} MB/s ({report['repository_mb']} MB in the repository)",
        f"db restore --backup (end to end): {restore_s:.1f} s = {mb / restore_s:.1f} MB/s",
    ])
    publish(report, text, RESULTS_FILE)
    Path(RESULTS_FILE.with_suffix(".log")).write_text(out, encoding="utf-8")
