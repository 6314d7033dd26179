"""deploystack.dbparse, engine/db.py's pure parts: psql --csv output, LSNs, lag, the status picture, backup names and
retention, the one-file tar stream. No Docker."""

from __future__ import annotations

import io
import tarfile

import pytest

from deploystack import dbparse as db
from deploystack.errors import StackError


def test_csv_rows_become_dicts_with_null_as_none_and_quoted_fields_kept() -> None:
    text = 'r,lsn,empty,q\nt,0/3000000,,"a,""b"\nf,16/B374D848,,x\n'
    assert db.parse_csv(text) == [
        {"r": "t", "lsn": "0/3000000", "empty": None, "q": 'a,"b'},
        {"r": "f", "lsn": "16/B374D848", "empty": None, "q": "x"},
    ]
    assert db.parse_csv("") == [] and db.parse_csv("a,b\n") == []


def test_a_row_with_a_field_too_many_is_an_error_not_a_shifted_row() -> None:
    with pytest.raises(ValueError):
        db.parse_csv("a,b\n1,2,3\n")


def test_lsns_are_byte_positions() -> None:
    assert db.parse_lsn("0/3000000") == 0x3000000
    assert db.parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert db.parse_lsn(None) is None and db.parse_lsn("") is None
    with pytest.raises(ValueError):
        db.parse_lsn("3000000")


def test_scalars() -> None:
    assert db.parse_bool("t") is True and db.parse_bool("f") is False and db.parse_bool(None) is None
    assert db.parse_int("16384") == 16384 and db.parse_int("0") == 0 and db.parse_int(None) is None
    assert db.parse_float("0.100588") == pytest.approx(0.100588) and db.parse_float(None) is None


def node_row(**values: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = {"in_recovery": "t", "lsn": "0/3000000", "receive_lsn": "0/3000000",
                                  "replay_age_s": None, "receiver": "streaming", "receiver_slot": "replica_1"}
    return row | values


def test_lag_from_the_primarys_view_first() -> None:
    sender = {"lag_bytes": "4096", "lag_s": "0.25"}
    assert db.replica_lag(node_row(), "0/3001000", sender) == (4096, 0.25)
    # caught up: no bytes pending means no seconds either, whatever replay_lag last said
    assert db.replica_lag(node_row(), "0/3000000", {"lag_bytes": "0", "lag_s": None}) == (0, 0.0)


def test_lag_from_lsns_when_the_primary_does_not_list_the_replica() -> None:
    # not streaming: the primary's current LSN minus what the replica replayed, and the age of its last replay
    assert db.replica_lag(node_row(replay_age_s="12.5"), "0/3000100", None) == (0x100, 12.5)
    assert db.replica_lag(node_row(), "0/3000000", None) == (0, 0.0)


def test_lag_from_the_replica_alone_when_the_primary_is_down() -> None:
    # WAL received but not yet replayed: behind by the age of the last replayed transaction
    assert db.replica_lag(node_row(receive_lsn="0/3000200", replay_age_s="3.0"), None, None) == (None, 3.0)
    # nothing pending locally and no primary to compare with: unknown, not zero
    assert db.replica_lag(node_row(replay_age_s="600"), None, None) == (None, None)


PRIMARY_ROW = {"in_recovery": "f", "lsn": "0/3000100", "receive_lsn": None, "replay_age_s": None,
               "receiver": None, "receiver_slot": None}
REPLICATION = ("application_name,client_addr,state,sync_state,replay_lsn,lag_bytes,lag_s\n"
               "replica_1,172.30.0.3,streaming,async,0/3000000,256,0.5\n")
SLOTS = ("slot_name,slot_type,active,restart_lsn,wal_status,retained_bytes\n"
         "replica_1,physical,t,0/3000000,reserved,256\n"
         "replica_3,physical,f,0/1000000,lost,33554688\n")


def test_status_puts_each_node_with_its_role_lag_and_slot() -> None:
    status = db.assemble("demo", [
        ("db-primary", "demo-db-primary-1", "running (healthy)", PRIMARY_ROW, None),
        ("db-replica-1", "demo-db-replica-1-1", "running (healthy)", node_row(), None),
        ("db-replica-2", "demo-db-replica-2-1", "running (healthy)",
         node_row(receiver=None, receiver_slot=None, lsn="0/2000000", replay_age_s="30"), None),
        ("db-replica-3", "-", "missing", None, "no container (is the stack up?)"),
    ], REPLICATION, SLOTS)
    primary, first, second, third = status.nodes
    assert (primary.role, primary.lsn, primary.lag_bytes, primary.replication) == ("primary", "0/3000100", None, None)
    assert (first.role, first.lag_bytes, first.lag_seconds, first.replication, first.slot, first.slot_health) == (
        "replica", 256, 0.5, "streaming", "replica_1", "ok")
    assert (second.lag_bytes, second.lag_seconds, second.replication, second.slot, second.slot_health) == (
        0x1000100, 30.0, "not connected", "replica_2", "missing")
    assert (third.role, third.state, third.error) == (None, "missing", "no container (is the stack up?)")
    assert [(s.name, s.health, s.retained_bytes) for s in status.slots] == [
        ("replica_1", "ok", 256), ("replica_3", "lost", 33554688)]
    data = status.as_dict()
    assert data["project"] == "demo" and data["slots"][1]["health"] == "lost"  # type: ignore[index]


def test_status_with_the_primary_unreachable_still_shows_the_replicas() -> None:
    status = db.assemble("demo", [
        ("db-primary", "demo-db-primary-1", "exited", None, "container exited"),
        ("db-replica-1", "demo-db-replica-1-1", "running (healthy)", node_row(receiver=None), None),
    ], None, None)
    primary, replica = status.nodes
    assert primary.role is None and primary.error == "container exited"
    assert (replica.role, replica.replication, replica.lag_bytes, replica.slot, replica.slot_health) == (
        "replica", "not connected", None, "replica_1", None)
    assert status.slots == []


STAMPS = ["20260101T000000000000Z", "20260102T000000000000Z", "20260103T000000000000Z", "20260104T000000000000Z"]


def test_backup_names() -> None:
    assert db.backup_name("demo", STAMPS[0]) == "db-demo-20260101T000000000000Z.dump"
    assert db.backup_name("demo", STAMPS[0], physical=True) == "db-demo-20260101T000000000000Z-physical.tar.gz"
    assert db.backup_name("demo", STAMPS[0], suffix="-before-restore") == \
        "db-demo-20260101T000000000000Z-before-restore.dump"
    import datetime as dt
    assert db.timestamp(dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)) == "20260102T030405000006Z"


def test_retention_keeps_the_newest_of_one_project_and_kind_only() -> None:
    mine = [db.backup_name("demo", s) for s in STAMPS]
    before = db.backup_name("demo", "20260103T120000000000Z", suffix="-before-restore")
    physical = [db.backup_name("demo", s, physical=True) for s in STAMPS]
    others = [db.backup_name("demo-abc123", STAMPS[0]), db.backup_name("demo2", STAMPS[0]),
              "notes.txt", f".{mine[0]}.partial", "db-demo-latest.dump"]
    names = [*reversed(mine), before, *physical, *others]
    # a before-restore dump counts as one of the project's dumps, in its place in time
    assert db.to_remove(names, "demo", physical=False, keep=2) == [mine[0], mine[1], mine[2]]
    assert db.to_remove(names, "demo", physical=False, keep=3) == [mine[0], mine[1]]
    assert db.to_remove(names, "demo", physical=True, keep=1) == physical[:3]
    assert db.to_remove(names, "demo", physical=False, keep=10) == []
    assert db.backups_of(names, "demo-abc123", physical=False) == [others[0]]
    with pytest.raises(ValueError):
        db.to_remove(names, "demo", physical=False, keep=0)


def test_is_backup() -> None:
    assert db.is_backup(db.backup_name("demo", STAMPS[0]), "demo", physical=False)
    assert not db.is_backup(db.backup_name("demo", STAMPS[0], physical=True), "demo", physical=False)
    assert db.is_backup(db.backup_name("demo", STAMPS[0], physical=True), "demo", physical=True)
    assert not db.is_backup(db.backup_name("demo", STAMPS[0]), "dem", physical=False)


def test_the_one_file_tar_stream_reads_back() -> None:
    content = bytes(range(256)) * 41 + b"tail"  # not a multiple of the tar block size
    chunks = [content[i:i + 1000] for i in range(0, len(content), 1000)]
    data = b"".join(db.single_file_tar("x.dump", len(content), iter(chunks), mtime=1.0))
    assert len(data) % tarfile.BLOCKSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.getmember("x.dump")
        assert member.size == len(content)
        extracted = archive.extractfile(member)
        assert extracted is not None and extracted.read() == content


def test_a_file_that_changes_size_while_sent_is_an_error() -> None:
    with pytest.raises(StackError, match="changed size"):
        b"".join(db.single_file_tar("x.dump", 10, iter([b"12345"])))


def test_the_pure_parts_load_without_docker() -> None:
    import subprocess
    import sys
    probe = "import sys, deploystack.dbparse; print(sorted(m for m in sys.modules if m.split('.')[0] == 'docker'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
