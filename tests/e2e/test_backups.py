"""dbc.backups on real Docker, Patroni, pgBackRest and SeaweedFS: WAL archived continuously, full backups every
minute (two kept), a point-in-time restore into the running stack that gives exactly the rows of that moment,
retention, `db verify` passing and failing on a damaged repository file, and a failing archive shown loud.

One stack for the module (two PostgreSQL 17 nodes, one app). Measurements are printed: run with -s."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploystack.plan.names import container_name
from deploystack.testing import StackUnderTest
from tests.conftest import eventually

pytestmark = pytest.mark.docker

SPEC = Path(__file__).parents[1] / "fixtures/projects/backups-pitr/deploystack.yaml"
seen_labels: list[str] = []  # every backup label the module saw, oldest first
before_restore: set[str] = set()  # the labels of the backups taken before the point-in-time restore


@pytest.fixture(scope="module")
def stack() -> Iterator[StackUnderTest]:
    with StackUnderTest(SPEC) as under_test:
        yield under_test


def cli(stack: StackUnderTest, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(stack.spec)],
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, f"deploystack {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def backups(stack: StackUnderTest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(stack, "db", "backups", "--json").stdout)
    for backup in data["backups"]:
        if backup["label"] not in seen_labels:
            seen_labels.append(backup["label"])
    return data


def sql(stack: StackUnderTest, query: str) -> str:
    """`query` on the leader, in the app's own database."""
    leader = json.loads(cli(stack, "db", "status", "--json").stdout)["leader"]
    code, out = stack.exec(leader, ["psql", "-X", "-U", "postgres", "-d", "backend", "-qtAc", query])
    assert code == 0, out
    return out.strip()


def recorded_backup(stack: StackUnderTest) -> dict[str, Any] | None:
    found = [b for b in backups(stack)["backups"] if b["recorded"]]
    return found[-1] if found else None


def test_point_in_time_restore_gives_exactly_the_rows_of_that_moment(stack: StackUnderTest) -> None:
    first = eventually(lambda: recorded_backup(stack), "the first scheduled backup", timeout=180)
    data = backups(stack)
    assert "same host, not a disaster copy" in data["repository"] and data["off_host"] is False
    sql(stack, "CREATE TABLE ledger (id int PRIMARY KEY, note text); "
               "INSERT INTO ledger SELECT g, 'before' FROM generate_series(1, 100) g")
    moment = sql(stack, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    time.sleep(1.5)
    sql(stack, "INSERT INTO ledger SELECT g, 'after' FROM generate_series(101, 200) g")
    sql(stack, "DELETE FROM ledger WHERE id <= 40")
    assert sql(stack, "SELECT count(*) FROM ledger") == "160"
    # Archive latency: a segment switched out reaches the repository (pg_stat_archiver) after this long.
    leader = json.loads(cli(stack, "db", "status", "--json").stdout)["leader"]
    psql = ["psql", "-X", "-U", "postgres", "-d", "backend", "-qtAc"]
    code, segment = stack.exec(leader, [*psql, "SELECT pg_walfile_name(pg_switch_wal())"])
    switched = time.monotonic()
    assert code == 0, segment
    eventually(lambda: stack.exec(leader, [*psql, "SELECT last_archived_wal FROM pg_stat_archiver"])[1].strip()
               >= segment.strip(), f"segment {segment.strip()} archived", timeout=60)
    print(f"\nsegment {segment.strip()} archived {time.monotonic() - switched:.2f}s after the switch")
    before_restore.update(b["label"] for b in backups(stack)["backups"])
    started = time.monotonic()
    out = cli(stack, "db", "restore", "--time", moment, "--yes").stdout
    took = time.monotonic() - started
    print(f"\nPITR to {moment} (base backup {first['label']}): db restore took {took:.1f}s\n{out}")
    assert sql(stack, "SELECT count(*), min(id), max(id), count(*) FILTER (WHERE note <> 'before') FROM ledger") \
        == "100|1|100|0"
    # Both nodes serve again (the second cloned the restored one), and the app answers through the LBC.
    status = json.loads(cli(stack, "db", "status", "--json").stdout)
    assert sorted(m["patroni_state"] for m in status["members"]) == ["running", "streaming"]
    assert status["archive"]["failing"] is False
    eventually(lambda: stack.exec("backend", ["apc-health"])[0] == 0, "the app after the restore", timeout=120)
    # Writes go on, on the restored timeline, and are archived again.
    sql(stack, "INSERT INTO ledger VALUES (1000, 'after the restore')")
    assert sql(stack, "SELECT count(*) FROM ledger") == "101"


def test_restore_of_a_backup_gives_the_rows_of_its_end(stack: StackUnderTest) -> None:
    """`db restore --backup LABEL`: consistent as of that backup's end; a row written after it is gone."""
    sql(stack, "INSERT INTO ledger VALUES (5000, 'before the backup')")  # ids the later tests do not use
    known = {b["label"] for b in backups(stack)["backups"]}
    # The next scheduled backup to finish holds the row (committed before the backup's stop position).
    newer = eventually(lambda: next((b for b in backups(stack)["backups"] if b["label"] not in known), None),
                       "a scheduled backup after the row", timeout=180)
    sql(stack, "INSERT INTO ledger VALUES (5001, 'after the backup')")
    started = time.monotonic()
    cli(stack, "db", "restore", "--backup", newer["label"], "--yes")
    print(f"\ndb restore --backup {newer['label']} took {time.monotonic() - started:.1f}s")
    assert sql(stack, "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger WHERE id >= 1000") == "1000,5000"
    eventually(lambda: stack.exec("backend", ["apc-health"])[0] == 0, "the app after the restore", timeout=120)


def test_verify_passes_then_fails_on_a_damaged_repository_file(stack: StackUnderTest) -> None:
    # A backup of the restored database (it holds the table `ledger`), taken by the schedule.
    eventually(lambda: (b := recorded_backup(stack)) is not None and b["label"] not in before_restore,
               "a scheduled backup after the restore", timeout=180)
    # The schedule paused meanwhile: the backup checked must not be expired under the test (full: 1m).
    stack.exec("backup", ["touch", "/run/postgresql/backup-paused"])
    try:
        eventually(lambda: "paused=yes" in stack.exec("backup", ["cat", "/run/postgresql/backup-state"])[1],
                   "the schedule paused", timeout=120)
        label = eventually(lambda: recorded_backup(stack), "a backup with its record")["label"]
        started = time.monotonic()
        out = cli(stack, "db", "verify", "--backup", label).stdout
        print(f"\ndb verify {label}: {time.monotonic() - started:.1f}s\n{out}")
        assert "backend: 12 tables" in out and "as recorded" in out  # Django's 11 and `ledger`
        relation = sql(stack, "SELECT pg_relation_filepath('ledger')")
        # Random bytes in place of the table's file in that backup (written raw: not encrypted, not compressed).
        code, out = stack.exec("backup", ["sh", "-c", "head -c 8192 /dev/urandom | setpriv --reuid=postgres "
                                          "--regid=postgres --init-groups pgbackrest repo-put --raw "
                                          f"backup/db/{label}/pg_data/{relation}.zst"])
        assert code == 0, out
        failed = cli(stack, "db", "verify", "--backup", label, check=False)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert f"pgbackrest could not restore backup {label}" in failed.stdout + failed.stderr
    finally:
        stack.exec("backup", ["rm", "-f", "/run/postgresql/backup-paused"])


def test_a_failing_archive_is_loud(stack: StackUnderTest) -> None:
    """The repository host away: archive_command fails, `db status` and `doctor` say so, with the WAL held."""
    backup = container_name(stack.project, "backup")
    subprocess.run(["docker", "stop", "-t", "5", backup], check=True, capture_output=True)
    try:
        sql(stack, "INSERT INTO ledger SELECT g, 'unarchived' FROM generate_series(2000, 2100) g; "
                   "SELECT pg_switch_wal()")

        def failing() -> dict[str, Any] | None:
            archive = json.loads(cli(stack, "db", "status", "--json").stdout)["archive"]
            return archive if archive["failing"] and archive["pending_segments"] >= 1 else None

        archive = eventually(failing, "pg_stat_archiver reporting the failure", timeout=90)
        assert archive["failed_count"] >= 1 and archive["last_failed_wal"]
        text = cli(stack, "db", "status").stdout + cli(stack, "db", "status").stderr
        assert "WAL ARCHIVING FAILS" in text
        doctor = cli(stack, "doctor", check=False)
        assert "archive_command fails" in doctor.stdout + doctor.stderr
    finally:
        subprocess.run(["docker", "start", backup], check=True, capture_output=True)
    def archiving_again() -> bool:
        # A new segment wakes the archiver, which otherwise waits a minute after three failures.
        sql(stack, "INSERT INTO ledger VALUES (3000, 'wake') ON CONFLICT DO NOTHING; SELECT pg_switch_wal()")
        time.sleep(3)
        archive = json.loads(cli(stack, "db", "status", "--json").stdout)["archive"]
        return not archive["failing"] and archive["pending_segments"] == 0

    eventually(archiving_again, "archiving again once the backup service is back", timeout=120)


def test_a_failed_scheduled_backup_is_loud_until_one_works(stack: StackUnderTest) -> None:
    """The repository's store stopped while a scheduled backup runs: that one fails (or hangs), no other can
    run, and the backup service's health check says so ("the last backup failed", "the repository cannot be
    read" or "has not finished"), and `db status`, `doctor` and `db backups` with it; the store back, the
    next backup runs and all is quiet again."""
    backup, store = container_name(stack.project, "backup"), container_name(stack.project, "media")
    eventually(lambda: health(backup) == "healthy", "the backup service healthy", timeout=180)
    # The store goes while a backup runs (the harder case: pgBackRest waits on the store; last CI found the
    # health check quiet then, for as long as the backup hung).
    eventually(lambda: "running=full" in stack.exec("backup", ["cat", "/run/postgresql/backup-state"])[1],
               "a scheduled backup running", timeout=120)
    subprocess.run(["docker", "stop", "-t", "5", store], check=True, capture_output=True)
    try:
        eventually(lambda: health(backup) == "unhealthy", "the health check failing", timeout=300)
        # "the repository cannot be read: ..." (or, when a backup was running, "the last backup failed: ...")
        status = cli(stack, "db", "status")
        assert "BACKUPS: the " in status.stderr, status.stderr
        doctor = cli(stack, "doctor", check=False)
        assert doctor.returncode == 1
        assert any("backup schedule" in line and "FAIL" in line for line in doctor.stdout.splitlines()), doctor.stdout
        # db backups reads the repository itself: it fails with one line saying why (measured: "pgbackrest info
        # did not answer within 60s ...: the repository's store is unreachable or too slow").
        listed = cli(stack, "db", "backups", "--json", check=False)
        assert listed.returncode != 0 and listed.stderr.startswith("error: pgbackrest info"), listed.stderr
        assert "Traceback" not in listed.stderr
    finally:
        subprocess.run(["docker", "start", store], check=True, capture_output=True)
    eventually(lambda: health(backup) == "healthy", "healthy again after the next backup", timeout=240)
    assert "BACKUPS" not in cli(stack, "db", "status").stderr


def health(container: str) -> str:
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def test_scheduled_backups_fire_and_retention_keeps_two(stack: StackUnderTest) -> None:
    """Last: the backups fired meanwhile (every minute) are usually enough already."""
    def rotated() -> dict[str, Any] | None:
        data = backups(stack)
        labels = [b["label"] for b in data["backups"]]
        # At least three full backups seen, the oldest of them expired, two kept (keep_full: 2).
        return data if len(seen_labels) >= 3 and seen_labels[0] not in labels and len(labels) == 2 else None

    data = eventually(rotated, "three scheduled full backups, the oldest expired", timeout=240)
    assert all(b["type"] == "full" for b in data["backups"])
    window = data["window"]
    assert window["from"] == data["backups"][0]["start"] and window["to"] >= data["backups"][-1]["stop"]
    durations = [time.mktime(time.strptime(b["stop"][:19], "%Y-%m-%dT%H:%M:%S"))
                 - time.mktime(time.strptime(b["start"][:19], "%Y-%m-%dT%H:%M:%S")) for b in data["backups"]]
    print(f"\nbackups seen: {seen_labels}; kept: {[b['label'] for b in data['backups']]}; "
          f"durations {durations} s; sizes {[b['size'] for b in data['backups']]} B")
    code, out = stack.exec("backup", ["backup-health"])
    assert code == 0, out
