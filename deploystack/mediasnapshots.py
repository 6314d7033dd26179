"""Pure reading of the media snapshots (dbc.backups.media, compose/backup/media-backup): their manifests as
the backup service lists them from the store, and which one a `media restore --time/--latest` means."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from deploystack.errors import StackError, UsageError


@dataclass(frozen=True)
class Snapshot:
    name: str  # YYYYMMDDTHHMMSSZ: its start, in UTC
    time: dt.datetime  # its start: objects changed while it ran may or may not be in it
    seconds: int  # how long the copy took: it ended at time + seconds, and holds nothing written after
    objects: int
    bytes: int
    buckets: dict[str, dict[str, int]]  # bucket: {objects, bytes}

    @property
    def ended(self) -> dt.datetime:
        return self.time + dt.timedelta(seconds=self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "time": self.time.strftime("%Y-%m-%d %H:%M:%S"),
                "ended": self.ended.strftime("%Y-%m-%d %H:%M:%S"), "seconds": self.seconds,
                "objects": self.objects, "bytes": self.bytes, "buckets": self.buckets}


@dataclass
class SnapshotsReport:
    project: str
    store: str  # where the snapshots are, said plainly
    off_host: bool
    snapshots: list[Snapshot]
    scheduler: dict[str, str] = field(default_factory=dict)  # the media scheduler's state file
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "store": self.store, "off_host": self.off_host,
                "snapshots": [s.as_dict() for s in self.snapshots], "scheduler": self.scheduler,
                "problems": self.problems}


def parse_snapshots(text: str) -> list[Snapshot]:
    """`media-backup list`: a JSON array of manifests, returned oldest first."""
    try:
        manifests = json.loads(text)
        found = [Snapshot(name=m["name"], time=dt.datetime.fromtimestamp(int(m["started"]), dt.UTC),
                          seconds=int(m["seconds"]), objects=int(m["objects"]), bytes=int(m["bytes"]),
                          buckets={b: {"objects": int(v["objects"]), "bytes": int(v["bytes"])}
                                   for b, v in m["buckets"].items()})
                 for m in manifests]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StackError(f"the media snapshots' manifests could not be read ({exc}): {text.strip()[:300]}") from None
    return sorted(found, key=lambda s: s.name)


def pick(snapshots: list[Snapshot], at: dt.datetime | None) -> Snapshot:
    """The newest snapshot that had ended at `at` (None: the newest of all): it holds nothing written after
    `at` (one still running then might). UsageError when there is none."""
    if not snapshots:
        raise UsageError("no media snapshot in the store yet (dbc.backups.media takes them on its schedule)")
    if at is None:
        return snapshots[-1]
    before = [s for s in snapshots if s.ended <= at]
    if not before:
        raise UsageError(f"no media snapshot ended at or before {at:%Y-%m-%d %H:%M:%S} UTC: the oldest kept "
                         f"ended at {snapshots[0].ended:%Y-%m-%d %H:%M:%S} UTC")
    return before[-1]


def check_object(value: str) -> str:
    """`--object BUCKET/KEY`, checked before anything runs."""
    bucket, sep, key = value.partition("/")
    if not sep or not bucket or not key or key.endswith("/") or "\n" in value:
        raise UsageError(f"--object {value!r}: expected BUCKET/KEY, e.g. media/uploads/a.png")
    return value
