"""One deploystack run at a time per output directory: `.deploystack/lock` under it."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from deploystack.errors import LockedError

if TYPE_CHECKING:
    from deploystack.engine.report import Reporter

STATE_DIR = ".deploystack"


@contextmanager
def project_lock(output: Path, wait_s: float = 0, report: Reporter | None = None) -> Iterator[None]:
    """One deploystack run at a time per output directory. A second one fails at once, clearly, or
    with `wait_s` queues behind the first (deploys do: a push during a rollout waits its turn)."""
    state = output / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(state / "lock", "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                if time.monotonic() >= deadline:
                    raise LockedError(f"{output} is busy: deploystack run by {holder} holds its lock; "
                                      "wait for it to finish") from None
                if report is not None and wait_s:
                    report.step(f"waiting for the run of {holder} to finish (queued)")
                    report = None  # say it once
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
