"""The CDC runner's loop (`python -m deploystack.cdc.runner`, compose/cdc-runner/entrypoint).

It polls the queue the receiver fills, and for each batch of pushes: drops (and logs) a file that is not a
push to the deploy branch, refuses a delivery id seen before, skips a push a later one overtook, and
deploys the newest with `deploystack deploy --ref <sha>` for every app from git, refusing a commit that
does not follow the deployed one. One deploy at a time: the project lock also queues deploys run by hand.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from deploystack.cdc import queue
from deploystack.errors import DeployError
from deploystack.plan.cdc import OUTPUT_PATH, QUEUE_DIR, SPEC_PATH
from deploystack.target import Target

POLL_S = 1.0
HEARTBEAT = Path("/tmp/cdc-runner.heartbeat")  # compose/cdc-runner/cdc-runner-health reads its age
HEARTBEAT_S = 5.0


def log(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} cdc-runner: {text}", flush=True)


class Runner:
    def __init__(self, folder: Path, target: Target, branch: str) -> None:
        self.folder = folder
        self.target = target
        self.branch = branch
        self.deliveries = queue.Deliveries(folder / queue.DELIVERIES)

    def once(self) -> bool:
        """Take every queued push; returns whether there was any."""
        files = queue.pending(self.folder)
        fresh = [push for push in map(self._take, files) if push is not None]
        skipped, newest = queue.newest_wins(fresh)
        for push in skipped:
            log(f"skipping {push.sha}: a newer push ({fresh[-1].sha}) is queued")
        if newest is not None:
            self._deploy(newest)
        return bool(files)

    def _take(self, file: Path) -> queue.Push | None:
        """The file's push, if it is one to deploy (its delivery id is then remembered); the file goes."""
        try:
            push = queue.parse(file.name, file.read_text(encoding="utf-8", errors="replace"), self.branch)
        except queue.BadPush as exc:
            log(f"refusing queued {file.name[:160]!r}: {exc}")
            return None
        finally:
            file.unlink(missing_ok=True)
        if self.deliveries.seen(push.delivery):
            log(f"refusing the push of {push.sha} (delivery {push.delivery}): a replay of a delivery "
                "already received; nothing deployed")
            return None
        self.deliveries.remember(push.delivery)
        return push

    def _deploy(self, push: queue.Push) -> None:
        from deploystack import console, gitsource
        from deploystack.operations import Session, deploys

        log(f"deploying {push.sha} (delivery {push.delivery})")
        try:
            deploys.deploy(Session(self.target, console.Progress()), None, push.sha,
                           f"webhook ({push.provider} push)", descendants_only=True)
        except gitsource.NotDescendant as exc:
            log(f"refused {push.sha}, nothing deployed: {exc}")
        except DeployError as exc:
            log(f"deploy of {push.sha} failed: {exc}")
        else:
            log(f"deployed {push.sha}")


def heartbeat() -> None:
    while True:
        HEARTBEAT.touch()
        time.sleep(HEARTBEAT_S)


def main() -> None:
    target = Target.of(Path(os.environ[SPEC_PATH]), Path(os.environ[OUTPUT_PATH]))
    runner = Runner(Path(QUEUE_DIR), target, os.environ["CDC_BRANCH"])
    threading.Thread(target=heartbeat, daemon=True).start()
    # PID 1 of its container: the kernel ignores a signal PID 1 has no handler for, so `docker stop` used to
    # wait its whole grace period for the SIGKILL. Now an idle runner leaves within POLL_S; a deploy under
    # way goes on until it ends (or the grace period does, as before).
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    log(f"waiting for pushes to refs/heads/{runner.branch} in {QUEUE_DIR}/{queue.INCOMING}")
    while not stopping.is_set():
        if not runner.once():
            stopping.wait(POLL_S)
    log("stopped")


if __name__ == "__main__":
    main()
