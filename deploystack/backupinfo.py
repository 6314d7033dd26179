"""Pure reading of what pgBackRest and the backup service report (no Docker): `pgbackrest info --output=json`,
the scheduler's state file, PostgreSQL's pg_stat_archiver; and the restore target a user typed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from deploystack.errors import UsageError

RECORD = "deploystack-record"  # the annotation holding a backup's row-count record (compose/backup)


@dataclass(frozen=True)
class Backup:
    label: str
    type: str  # full, diff, incr
    start: dt.datetime
    stop: dt.datetime
    size: int  # bytes of the database at backup time
    repo_size: int  # bytes in the repository (compressed, this backup's own files)
    wal_start: str | None
    wal_stop: str | None
    recorded: bool  # the backup service wrote its row-count record


@dataclass(frozen=True)
class Archiver:
    """pg_stat_archiver on the leader, and the WAL waiting to be archived (held back in pg_wal)."""

    archived_count: int
    last_archived_wal: str | None
    last_archived_time: dt.datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: dt.datetime | None
    pending_segments: int  # .ready files: segments PostgreSQL could not archive yet
    segment_size: int

    @property
    def pending_bytes(self) -> int:
        return self.pending_segments * self.segment_size

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pending_bytes": self.pending_bytes, "failing": self.failing,
                "last_archived_time": _iso(self.last_archived_time), "last_failed_time": _iso(self.last_failed_time)}

    @property
    def failing(self) -> bool:
        """The last attempt failed (and none succeeded since)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time


@dataclass
class BackupsReport:
    project: str
    repository: str  # where: bucket and endpoint
    off_host: bool
    backups: list[Backup]
    archiver: Archiver | None
    scheduler: dict[str, str]
    problems: list[str] = field(default_factory=list)

    @property
    def window(self) -> tuple[dt.datetime, dt.datetime] | None:
        """What a point-in-time restore can reach: the oldest backup's start to the last archived WAL."""
        if not self.backups:
            return None
        end = self.archiver.last_archived_time if self.archiver is not None else None
        newest = max(b.stop for b in self.backups)
        return min(b.start for b in self.backups), max(end, newest) if end is not None else newest

    def as_dict(self) -> dict[str, Any]:
        window = self.window
        return {
            "project": self.project, "repository": self.repository, "off_host": self.off_host,
            "backups": [{**asdict(b), "start": b.start.isoformat(), "stop": b.stop.isoformat()} for b in self.backups],
            "window": None if window is None else {"from": window[0].isoformat(), "to": window[1].isoformat()},
            "archiver": None if self.archiver is None else self.archiver.as_dict(),
            "scheduler": self.scheduler, "problems": self.problems,
        }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _epoch(value: object) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(str(value)), dt.UTC)


def parse_info(text: str) -> list[Backup]:
    """The backups of the first stanza in `pgbackrest info --output=json`, oldest first."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"pgbackrest info did not print JSON: {exc}") from None
    if not data:
        return []
    backups = []
    for item in data[0].get("backup", []):
        info = item.get("info", {})
        archive = item.get("archive") or {}
        backups.append(Backup(
            label=str(item["label"]), type=str(item["type"]),
            start=_epoch(item["timestamp"]["start"]), stop=_epoch(item["timestamp"]["stop"]),
            size=int(info.get("size", 0)), repo_size=int((info.get("repository") or {}).get("delta", 0)),
            wal_start=archive.get("start"), wal_stop=archive.get("stop"),
            recorded=RECORD in (item.get("annotation") or {}),
        ))
    return sorted(backups, key=lambda b: b.start)


def restore_problem(text: str, label: str | None = None) -> str | None:
    """Why `pgbackrest info --output=json` shows nothing to restore (None: it does): the stanza missing (an
    empty repository, another project's, or a wrong bucket), no backup, the repository unreadable (pgBackRest's
    status), or no backup `label`."""
    backups = parse_info(text)
    data = json.loads(text)
    status = (data[0].get("status") or {}) if data else {}
    if not data or status.get("code") in (1, 3):
        return "the repository holds no backup of this stack (no stanza: an empty or another bucket or path?)"
    if status.get("code") not in (0, 2) and not backups:
        return f"pgBackRest reports: {status.get('message', 'an unknown status')}"
    if not backups:
        return "the repository holds no backup yet (WAL alone cannot be restored)"
    if label is not None and label not in {b.label for b in backups}:
        return f"no backup {label} (there are: {', '.join(b.label for b in backups)})"
    return None


def parse_state(text: str) -> dict[str, str]:
    """The scheduler's KEY=value state file."""
    state = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            state[key.strip()] = value.strip()
    return state


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def parse_archiver(row: Mapping[str, str | None]) -> Archiver:
    """A row of ARCHIVER_SQL (engine/backups.py) as psql --csv prints it."""
    def integer(key: str) -> int:
        return int(row.get(key) or 0)

    return Archiver(
        archived_count=integer("archived_count"), last_archived_wal=row.get("last_archived_wal") or None,
        last_archived_time=_time(row.get("last_archived_time")), failed_count=integer("failed_count"),
        last_failed_wal=row.get("last_failed_wal") or None, last_failed_time=_time(row.get("last_failed_time")),
        pending_segments=integer("pending"), segment_size=integer("segment_size") or 16 << 20,
    )


def restore_moment(value: str) -> dt.datetime:
    """`--time` (`YYYY-MM-DD HH:MM:SS[.ffffff][+TZ]`, no zone meaning UTC) as an aware UTC moment. UsageError
    (exit 2) otherwise."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"--time {value!r}: expected YYYY-MM-DD HH:MM:SS with an optional zone (+02:00); "
                         "no zone means UTC") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def restore_time(value: str) -> str:
    """`--time` as PostgreSQL's recovery_target_time takes it, in UTC."""
    return restore_moment(value).strftime("%Y-%m-%d %H:%M:%S.%f+00")
