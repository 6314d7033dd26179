"""`deploystack db status/backup/restore` as a user runs them (the CLI in a subprocess), on a stack of
db-primary and db-replica-1 only: replication seen and measured, a dump restored over a dropped table
and streamed to the replica, retention, a physical backup refused by restore, a stopped node shown."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from deploystack.testing import StackUnderTest
from tests.conftest import BLUEPRINTS, eventually

pytestmark = pytest.mark.docker

DEFAULT = BLUEPRINTS / "default" / "deploystack.yaml"


@pytest.fixture(scope="module")
def db_stack() -> Iterator[StackUnderTest]:
    with StackUnderTest(DEFAULT, services=["db-replica-1"]) as under_test:
        yield under_test


def cli(stack: StackUnderTest, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "deploystack", "db", *args, "-f", str(stack.spec)],
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"deploystack db {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def status(stack: StackUnderTest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(stack, "status", "--json").stdout)
    return data


def sql(stack: StackUnderTest, service: str, query: str) -> str:
    """As the first app's role on its database, as the app's own migrations would make the tables."""
    code, out = stack.exec(service, ["env", "PGOPTIONS=-c role=backend", "psql", "-X", "-U", "postgres",
                                     "-d", "backend", "-qtAc", query])
    assert code == 0, out
    return out.strip()


def test_status_shows_one_primary_and_one_streaming_replica_that_catches_up(db_stack: StackUnderTest) -> None:
    data = status(db_stack)
    assert data["project"] == db_stack.project
    nodes = {n["service"]: n for n in data["nodes"]}
    assert set(nodes) == {"db-primary", "db-replica-1"}
    assert nodes["db-primary"]["role"] == "primary" and nodes["db-replica-1"]["role"] == "replica"
    assert nodes["db-primary"]["state"] == "running (healthy)"
    assert nodes["db-replica-1"]["replication"] == "streaming"
    assert (nodes["db-replica-1"]["slot"], nodes["db-replica-1"]["slot_health"]) == ("replica_1", "ok")
    assert [(s["name"], s["active"], s["health"]) for s in data["slots"]] == [("replica_1", True, "ok")]

    sql(db_stack, "db-primary", "CREATE TABLE notes(id int PRIMARY KEY, body text);"
                                "INSERT INTO notes SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g")

    def caught_up() -> dict[str, Any] | None:
        replica = next(n for n in status(db_stack)["nodes"] if n["service"] == "db-replica-1")
        return replica if replica["lag_bytes"] == 0 else None

    replica = eventually(caught_up, "db-replica-1 at 0 bytes of lag")
    assert replica["lag_seconds"] == 0.0
    primary_lsn = next(n for n in status(db_stack)["nodes"] if n["service"] == "db-primary")["lsn"]
    assert primary_lsn != "0/0"
    assert sql(db_stack, "db-replica-1", "SELECT count(*) FROM notes") == "5000"

    table = cli(db_stack, "status").stdout
    assert "db-primary" in table and "db-replica-1" in table and "streaming" in table and "replica_1 (ok)" in table


def test_backup_drop_restore_brings_the_rows_back_on_primary_and_replica(
        db_stack: StackUnderTest, tmp_path: Path) -> None:
    sql(db_stack, "db-primary", "CREATE TABLE IF NOT EXISTS kept(id int PRIMARY KEY, body text);"
                                "INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    result = cli(db_stack, "backup", str(tmp_path))
    dumps = sorted(tmp_path.glob(f"db-{db_stack.project}-*.dump"))
    assert len(dumps) == 1 and str(dumps[0]) in result.stdout
    assert dumps[0].read_bytes()[:5] == b"PGDMP" and dumps[0].stat().st_mode & 0o077 == 0
    assert not list(tmp_path.glob(".*partial"))

    sql(db_stack, "db-primary", "DROP TABLE kept")
    eventually(lambda: sql(db_stack, "db-replica-1", "SELECT to_regclass('kept') IS NULL") == "t",
               "the drop on the replica")

    cli(db_stack, "restore", str(dumps[0]))
    assert sql(db_stack, "db-primary", "SELECT count(*), sum(length(body)) FROM kept") == "1000|32000"
    assert sql(db_stack, "db-primary", "SELECT tableowner FROM pg_tables WHERE tablename = 'kept'") == "backend"
    eventually(lambda: sql(db_stack, "db-replica-1", "SELECT count(*) FROM kept") == "1000", "the rows on the replica")
    # what the database held before the restore (no `kept`) was dumped next to the backup first
    before = sorted(tmp_path.glob(f"db-{db_stack.project}-*-before-restore.dump"))
    assert len(before) == 1 and before[0].read_bytes()[:5] == b"PGDMP"


def test_retention_keeps_n_per_kind_and_restore_refuses_a_physical_backup(
        db_stack: StackUnderTest, tmp_path: Path) -> None:
    stranger = tmp_path / "db-otherproject-20200101T000000000000Z.dump"
    stranger.write_bytes(b"PGDMP not ours")
    for _ in range(3):
        cli(db_stack, "backup", str(tmp_path), "--keep", "2")
    dumps = sorted(tmp_path.glob(f"db-{db_stack.project}-*.dump"))
    assert len(dumps) == 2 and stranger.exists()

    cli(db_stack, "backup", str(tmp_path), "--physical", "--keep", "1")
    cli(db_stack, "backup", str(tmp_path), "--physical", "--keep", "1")
    physical = sorted(tmp_path.glob(f"db-{db_stack.project}-*-physical.tar.gz"))
    assert len(physical) == 1 and sorted(tmp_path.glob(f"db-{db_stack.project}-*.dump")) == dumps
    listing = subprocess.run(["tar", "-tzf", str(physical[0])], capture_output=True, text=True, check=True).stdout
    assert "PG_VERSION" in listing and "backup_label" in listing

    refused = cli(db_stack, "restore", str(physical[0]), check=False)
    assert refused.returncode == 2 and "physical" in refused.stderr and "docs/db.md" in refused.stderr
    bad_keep = cli(db_stack, "backup", str(tmp_path), "--keep", "0", check=False)
    assert bad_keep.returncode == 2 and "--keep must be at least 1" in bad_keep.stderr


def test_a_stopped_replica_shows_as_stopped_not_a_traceback(db_stack: StackUnderTest) -> None:
    client = docker.from_env()
    replica = client.containers.get(f"{db_stack.project}-db-replica-1-1")
    replica.stop(timeout=30)
    try:
        result = cli(db_stack, "status", "--json")
        nodes = {n["service"]: n for n in json.loads(result.stdout)["nodes"]}
        assert nodes["db-replica-1"]["role"] is None and nodes["db-replica-1"]["state"].startswith("exited")
        assert nodes["db-primary"]["role"] == "primary"
        slots = json.loads(result.stdout)["slots"]
        assert [(s["name"], s["active"]) for s in slots] == [("replica_1", False)]
        assert "Traceback" not in result.stderr
    finally:
        replica.start()
    eventually(lambda: next(n for n in status(db_stack)["nodes"] if n["service"] == "db-replica-1")["replication"]
               == "streaming", "the replica streaming again", timeout=120)


def test_promote_after_losing_the_primary_keeps_every_replicated_row() -> None:
    """Its own stack (the module's is left alone): rows replicated, primary killed, replica promoted,
    writes again, and every earlier row is on the new primary and on the re-cloned replica."""
    with StackUnderTest(DEFAULT, services=["db-replica-1"]) as stack:
        sql(stack, "db-primary", "CREATE TABLE ledger(n int); INSERT INTO ledger SELECT generate_series(1, 500)")
        eventually(lambda: sql(stack, "db-replica-1", "SELECT count(*) FROM ledger") == "500", "replicated")
        docker.from_env().containers.get(f"{stack.project}-db-primary-1").kill()

        refused = cli(stack, "promote", "db-replica-9", check=False)
        assert refused.returncode == 2 and "not a replica of this stack" in refused.stderr
        result = cli(stack, "promote", "db-replica-1")
        assert "db-replica-1 promoted" in result.stdout

        assert sql(stack, "db-primary", "SELECT pg_is_in_recovery()") == "f"
        sql(stack, "db-primary", "INSERT INTO ledger VALUES (501)")
        assert sql(stack, "db-primary", "SELECT count(*), max(n) FROM ledger") == "501|501"
        eventually(lambda: sql(stack, "db-replica-1", "SELECT count(*) FROM ledger") == "501", "re-cloned replica")
        assert sql(stack, "db-replica-1", "SELECT pg_is_in_recovery()") == "t"
        kept = [v.name for v in docker.from_env().volumes.list(
            filters={"label": f"com.docker.compose.project={stack.project}"}) if "before-promote" in (v.name or "")]
        assert len(kept) == 1


def test_a_backup_restores_into_a_fresh_stack(db_stack: StackUnderTest, tmp_path: Path) -> None:
    sql(db_stack, "db-primary", "CREATE TABLE moving(n int); INSERT INTO moving SELECT generate_series(1, 300)")
    cli(db_stack, "backup", str(tmp_path))
    (dump,) = tmp_path.glob(f"db-{db_stack.project}-*.dump")
    with StackUnderTest(DEFAULT, services=["db-primary"]) as fresh:
        cli(fresh, "restore", str(dump))
        assert sql(fresh, "db-primary", "SELECT count(*), sum(n) FROM moving") == "300|45150"
