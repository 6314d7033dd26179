"""Shared helpers: a spec folder laid out in tmp_path, with throwaway Django sources."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The multi-node swarm, one per session for tests/cluster and tests/swarm (made only when a test asks).
from tests.cluster.cluster import cluster, host_engine  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
BLUEPRINTS = REPO / "blueprints"


def write_spec(folder: Path, text: str, apps: tuple[str, ...] = ("backend",)) -> Path:
    """A spec file plus a minimal Django project (just manage.py) for each app source."""
    for app in apps:
        (folder / "apps" / app).mkdir(parents=True, exist_ok=True)
        (folder / "apps" / app / "manage.py").write_text("# stand-in\n")
    spec = folder / "deploystack.yaml"
    spec.write_text(text)
    return spec


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    return tmp_path


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `check()` until it returns something truthy; bounded. A check that fails an assertion (a
    table not replicated yet, say) counts as "not yet"; its last message is kept for the timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            value = check()
        except AssertionError as exc:
            value, last = None, f" (last: {str(exc).splitlines()[0] if str(exc) else 'assertion failed'})"
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f}s{last}")
        time.sleep(0.5)
