"""The deploy history of a stack: one JSON line per deploy or rollback, in `<output>/.deploystack/`.

It also says which image each app runs. A deploy builds the app's image from its source, so normally
the image is simply the one its source builds. A rollback runs an older image while the source stays
as it was; that record "pins" the older image, and the pin holds while the source builds the same image
it built when the pin was made. Change the source (or deploy again) and the source wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

FILE = "deploys.jsonl"
OK = "ok"
ROLLED_BACK = "rolled back"  # the new image failed; the old one is back on every replica
FAILED = "failed"  # stopped before any replica changed (a build, a fetch, the migrations)
REFUSED = "refused"  # a webhook's push that does not follow the deployed commit: nothing was done


@dataclass(frozen=True)
class Deploy:
    app: str
    kind: str  # "deploy" or "rollback"
    ref: str  # the commit deployed, or "source" for an app built from a local folder
    image: str  # what the app runs after an OK record; what was tried otherwise
    source_image: str  # the image its source built at the time (see the module's docstring)
    previous: str  # the image the app ran before
    started: str  # ISO 8601, UTC
    seconds: float
    trigger: str  # who or what asked: "cli (root)", "webhook (github push)"
    result: str
    message: str = ""
    previous_ref: str = ""  # the commit that ran before, when known


def path(output: Path) -> Path:
    return output / ".deploystack" / FILE


def read(output: Path) -> list[Deploy]:
    """Every record, oldest first (a line cut short by a crash is skipped)."""
    try:
        lines = path(output).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(Deploy(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return records


def append(output: Path, record: Deploy) -> None:
    file = path(output)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            cut_short = handle.read(1) != b"\n"  # a crash mid-write: don't glue this record onto it
            handle.seek(0, os.SEEK_END)
            if cut_short:
                handle.write(b"\n")
        handle.write((json.dumps(asdict(record), sort_keys=True) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())


def current(records: list[Deploy], app: str) -> Deploy | None:
    """The app's last successful deploy or rollback."""
    return next((r for r in reversed(records) if r.app == app and r.result == OK), None)


def pinned_image(records: list[Deploy], app: str, source_image: str) -> str | None:
    """The image the app should run instead of `source_image`, if a rollback pinned one that still holds."""
    last = current(records, app)
    if last is None or last.image == source_image or last.source_image != source_image:
        return None
    return last.image


def rollback_target(records: list[Deploy], app: str) -> Deploy | None:
    """The newest successful record of the app whose image differs from the one it runs now."""
    ok = [r for r in records if r.app == app and r.result == OK]
    if not ok:
        return None
    running = ok[-1].image
    for record in reversed(ok):
        if record.image != running:
            return record
        if record.previous != running:  # e.g. the image `up` started, before the first deploy
            return replace(record, image=record.previous, ref=record.previous_ref or "previous")
    return None


def recent_images(records: list[Deploy], per_app: int = 3) -> set[str]:
    """Images worth keeping for a quick rollback: each app's last few that ran."""
    keep: set[str] = set()
    for app in {r.app for r in records}:
        ok = [image for r in records if r.app == app and r.result == OK for image in (r.previous, r.image)]
        keep |= set(list(dict.fromkeys(reversed(ok)))[:per_app])
    return keep
