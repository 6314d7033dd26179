"""The CDC's queue: the pushes the receiver verified, one JSON file each on the volume it shares with the
runner, and the delivery ids the runner has seen (a file on that volume only the runner can write).

The runner trusts nothing in a queued file: the receiver faces the internet, so every value is checked
again here, and replays are refused here, not there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from deploystack.atomicfile import write_atomically

INCOMING = "incoming"  # the receiver's folder (compose/cdc/cdc-enqueue writes it)
DELIVERIES = "deliveries"  # the delivery ids seen, one a line, newest last
SUFFIX = ".json"
SHA = re.compile(r"^[0-9a-f]{40}$")
DELIVERY = re.compile(r"^[A-Za-z0-9._-]{1,128}$")  # as cdc-enqueue checks it
KEEP = 10_000  # delivery ids remembered: replaying an older one still meets the descendant check


class BadPush(ValueError):
    """A queued file that is not a push to deploy: its reason is logged, the file is dropped."""


@dataclass(frozen=True)
class Push:
    name: str  # the file's name, which sorts in arrival order
    delivery: str
    sha: str
    ref: str
    provider: str


def parse(name: str, text: str, branch: str) -> Push:
    """A queued file's push, checked as if the receiver had not checked it."""
    try:
        data = json.loads(text)
    except ValueError:
        raise BadPush("not JSON") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str)
                                             for k in ("delivery", "sha", "ref", "provider")):
        raise BadPush("not a push (delivery, sha, ref and provider are needed)")
    push = Push(name, data["delivery"], data["sha"], data["ref"], data["provider"])
    if not DELIVERY.match(push.delivery):
        raise BadPush(f"delivery id {push.delivery[:80]!r} is not one a forge sends")
    if not SHA.match(push.sha):
        raise BadPush(f"{push.sha[:80]!r} is not a 40-hex-digit commit")
    if push.ref != f"refs/heads/{branch}":
        raise BadPush(f"{push.ref[:120]!r} is not refs/heads/{branch}")
    return push


def pending(queue: Path) -> list[Path]:
    """Queued files, oldest first (a file still being written starts with a dot)."""
    folder = queue / INCOMING
    return sorted(p for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith("."))


def newest_wins(pushes: list[Push]) -> tuple[list[Push], Push | None]:
    """(the pushes a later one overtook, the one to deploy): a burst never deploys an older commit last."""
    if not pushes:
        return [], None
    return pushes[:-1], pushes[-1]


class Deliveries:
    """The delivery ids seen, oldest first; the newest KEEP are kept."""

    def __init__(self, path: Path, keep: int = KEEP) -> None:
        self.path = path
        self.keep = keep

    def _read(self) -> list[str]:
        try:
            return self.path.read_text(encoding="ascii").split()
        except FileNotFoundError:
            return []

    def seen(self, delivery: str) -> bool:
        return delivery in self._read()

    def remember(self, delivery: str) -> None:
        """Before a deploy starts: a crash during it must not let the same delivery deploy again."""
        ids = self._read()
        if len(ids) >= 2 * self.keep:  # trim now and then, not at every push
            write_atomically(self.path, ("\n".join([*ids[-self.keep:], delivery]) + "\n").encode())
            return
        with self.path.open("a", encoding="ascii") as handle:
            handle.write(delivery + "\n")
            handle.flush()
            os.fsync(handle.fileno())
