"""The database's pure parts: `psql --csv` output (rows, LSNs, booleans, numbers), the status picture of
the primary, its replicas and an offsite replica (lag, slots), backup names and their retention, and the
one-file tar stream a restore sends. No Docker and no I/O: engine/db.py runs the commands and hands their
output here; tests/unit/test_dbparse.py checks them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from deploystack.errors import StackError
from deploystack.plan.names import PRIMARY, slot_name

# -- pure: parsing psql's output --------------------------------------------------------------------


def parse_csv(text: str) -> list[dict[str, str | None]]:
    """Rows of `psql --csv` (header first) as dicts; psql prints NULL as an empty field, so '' is None."""
    reader = csv.reader(io.StringIO(text))
    rows = [row for row in reader if row]
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    return [{key: (value if value != "" else None) for key, value in zip(header, row, strict=True)} for row in body]


def parse_lsn(text: str | None) -> int | None:
    """`16/B374D848` -> the byte position it names; None stays None."""
    if not text:
        return None
    high, sep, low = text.strip().partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def parse_bool(text: str | None) -> bool | None:
    return None if text is None else text in ("t", "true", "on")


def parse_int(text: str | None) -> int | None:
    return None if text is None else int(float(text))


def parse_float(text: str | None) -> float | None:
    return None if text is None else float(text)


# -- pure: the status picture -----------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    name: str
    type: str
    active: bool
    restart_lsn: str | None
    wal_status: str | None
    retained_bytes: int | None

    @property
    def health(self) -> str:
        if self.wal_status == "lost":
            return "lost"  # the WAL it needed is gone: its replica must be rebuilt
        return "ok" if self.active else "inactive"


@dataclass(frozen=True)
class Node:
    service: str
    container: str
    state: str  # container state, with its health when it has one: "running (healthy)"
    role: str | None = None  # from pg_is_in_recovery(); None when the server did not answer
    lsn: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replication: str | None = None  # a replica's streaming state
    slot: str | None = None  # a replica's replication slot on the primary
    slot_health: str | None = None  # ok, inactive, lost; missing when the primary has no such slot
    error: str | None = None


@dataclass(frozen=True)
class Status:
    project: str
    nodes: list[Node]
    slots: list[Slot] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"project": self.project, "nodes": [asdict(n) for n in self.nodes],
                "slots": [asdict(s) | {"health": s.health} for s in self.slots]}


def parse_slots(text: str) -> list[Slot]:
    return [Slot(name=row["slot_name"] or "", type=row["slot_type"] or "", active=bool(parse_bool(row["active"])),
                 restart_lsn=row["restart_lsn"], wal_status=row["wal_status"],
                 retained_bytes=parse_int(row["retained_bytes"]))
            for row in parse_csv(text)]


def replica_lag(node: dict[str, str | None], primary_lsn: str | None,
                sender: dict[str, str | None] | None) -> tuple[int | None, float | None]:
    """(bytes, seconds) a replica is behind, preferring the primary's view (pg_stat_replication).

    Bytes: the primary's `current - replay` for this replica, else the primary's current LSN minus the
    replica's replay LSN. Seconds: 0 when no byte is pending; else the primary's replay_lag; else, when
    WAL is pending, the age of the last transaction the replica replayed. None when nothing tells.
    """
    replay = parse_lsn(node.get("lsn"))
    lag_bytes: int | None = None
    if sender is not None and sender.get("lag_bytes") is not None:
        lag_bytes = max(0, parse_int(sender["lag_bytes"]) or 0)
    elif primary_lsn is not None and replay is not None:
        lag_bytes = max(0, (parse_lsn(primary_lsn) or 0) - replay)
    if lag_bytes == 0:
        return 0, 0.0
    if sender is not None and sender.get("lag_s") is not None:
        return lag_bytes, parse_float(sender["lag_s"])
    received = parse_lsn(node.get("receive_lsn"))
    pending = (lag_bytes or 0) > 0 or (received is not None and replay is not None and received > replay)
    if pending and node.get("replay_age_s") is not None:
        return lag_bytes, max(0.0, parse_float(node["replay_age_s"]) or 0.0)
    return lag_bytes, None


def assemble(project: str, observed: Sequence[tuple[str, str, str, dict[str, str | None] | None, str | None]],
             replication_csv: str | None, slots_csv: str | None, offsite: str | None = None) -> Status:
    """The status from what each node answered.

    `observed`: (service, container, state, the node's NODE_SQL row or None, error) per node;
    `replication_csv`/`slots_csv`: the primary's pg_stat_replication / pg_replication_slots, when it answered;
    `offsite`: the offsite replica's slot (and application name), seen from the primary only.
    """
    senders = {row["application_name"]: row for row in parse_csv(replication_csv or "")}
    slots = parse_slots(slots_csv or "")
    by_slot = {s.name: s for s in slots}
    primary_lsn = next((row["lsn"] for service, _, _, row, _ in observed
                        if row is not None and parse_bool(row["in_recovery"]) is False and service == PRIMARY), None)
    nodes = []
    for service, container, state, row, error in observed:
        if row is None:
            nodes.append(Node(service, container, state, error=error or "no answer"))
            continue
        if parse_bool(row["in_recovery"]) is False:
            nodes.append(Node(service, container, state, role="primary", lsn=row["lsn"]))
            continue
        slot = row.get("receiver_slot") or slot_name(service)
        sender = senders.get(slot)
        lag_bytes, lag_seconds = replica_lag(row, primary_lsn, sender)
        streaming = sender["state"] if sender is not None else (row.get("receiver") or "not connected")
        found = by_slot.get(slot)
        nodes.append(Node(service, container, state, role="replica", lsn=row["lsn"], lag_bytes=lag_bytes,
                          lag_seconds=lag_seconds, replication=streaming, slot=slot,
                          slot_health=found.health if found else ("missing" if slots_csv else None)))
    if offsite is not None:
        nodes.append(_offsite_node(offsite, senders.get(offsite), by_slot.get(offsite), slots_csv is not None))
    return Status(project, nodes, slots)


def offsite_status(name: str, replication_csv: str | None, slots_csv: str | None) -> tuple[Node, Slot | None]:
    """The offsite replica (slot and application name `name`) and its slot, from a Patroni leader's
    pg_stat_replication and pg_replication_slots (None: the leader did not answer)."""
    senders = {row["application_name"]: row for row in parse_csv(replication_csv or "")}
    slot = next((s for s in parse_slots(slots_csv or "") if s.name == name), None)
    return _offsite_node(name, senders.get(name), slot, slots_csv is not None), slot


def _offsite_node(name: str, sender: dict[str, str | None] | None, slot: Slot | None, primary_answered: bool) -> Node:
    """The offsite replica as the primary sees it: no container here, so its address stands in for one."""
    if sender is None:
        return Node(name, "-", "remote", replication="not connected" if primary_answered else None, slot=name,
                    slot_health=slot.health if slot else ("missing" if primary_answered else None),
                    error="not connected to the primary" if primary_answered else "the primary did not answer")
    lag_bytes = parse_int(sender["lag_bytes"])
    return Node(name, sender["client_addr"] or "-", "remote", role="replica", lsn=sender["replay_lsn"],
                lag_bytes=None if lag_bytes is None else max(0, lag_bytes),
                lag_seconds=0.0 if lag_bytes == 0 else parse_float(sender["lag_s"]),
                replication=sender["state"], slot=name,
                slot_health=slot.health if slot else "missing")


# -- pure: backup names and retention ---------------------------------------------------------------

STAMP = r"\d{8}T\d{12}Z"


def timestamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")


def backup_name(project: str, stamp: str, physical: bool = False, suffix: str = "") -> str:
    """`db-<project>-<UTC stamp>[suffix].dump`, or `...[suffix]-physical.tar.gz` for a base backup."""
    return f"db-{project}-{stamp}{suffix}" + ("-physical.tar.gz" if physical else ".dump")


def _pattern(project: str, physical: bool) -> re.Pattern[str]:
    end = r"-physical\.tar\.gz" if physical else r"\.dump"
    return re.compile(rf"db-{re.escape(project)}-(?P<stamp>{STAMP})(?P<suffix>(-[a-z0-9]+)*?){end}")


def is_backup(name: str, project: str, physical: bool) -> bool:
    return _pattern(project, physical).fullmatch(name) is not None


def backups_of(names: Iterable[str], project: str, physical: bool) -> list[str]:
    """This project's backups of one kind among `names`, oldest first (by their UTC stamp)."""
    pattern = _pattern(project, physical)
    found = [(m["stamp"], name) for name in names if (m := pattern.fullmatch(name))]
    return [name for _, name in sorted(found)]


def to_remove(names: Iterable[str], project: str, physical: bool, keep: int) -> list[str]:
    """The backups beyond the `keep` newest of this project and kind (others' files are never named)."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    return backups_of(names, project, physical)[:-keep]


def single_file_tar(name: str, size: int, chunks: Iterable[bytes], mtime: float = 0.0) -> Iterator[bytes]:
    """A tar stream of one file, made on the fly from its chunks (the file is never held in memory)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(mtime)
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        yield chunk
    if sent != size:
        raise StackError(f"{name} changed size while being sent ({size} -> {sent} bytes)")
    yield b"\0" * ((-size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)
