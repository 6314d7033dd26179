"""Last of the e2e session (files run in name order): `down` removes containers and networks, keeps volumes;
it stops the services in reverse dependency order, independent ones together, each on its own stop signal."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module", autouse=True)
def engine_events(stack: Stack) -> Iterator[list[dict[str, Any]]]:
    """The engine's container events of this project while the module runs, read as they come (the engine
    keeps only its last 256 events for a later query, and a shared engine makes more than that)."""
    found: list[dict[str, Any]] = []
    stream = stack.docker.events(decode=True, since=datetime.now(UTC), filters={
        "type": "container", "label": f"com.docker.compose.project={stack.project}"})

    def read() -> None:
        with contextlib.suppress(Exception):  # the stream ends when it is closed, with an error or not
            for event in stream:
                found.append(event)

    threading.Thread(target=read, daemon=True).start()
    yield found
    stream.close()


def test_down_removes_containers_and_networks_and_keeps_volumes(stack: Stack) -> None:
    stack.cli("down")
    assert stack.containers() == []
    label = {"label": f"com.docker.compose.project={stack.project}"}
    assert stack.docker.networks.list(filters=label) == []
    assert {v.name for v in stack.docker.volumes.list(filters=label)} >= {f"{stack.project}_db-primary-data"}


def test_down_stopped_dependents_first_together_and_killed_nothing(engine_events: list[dict[str, Any]]) -> None:
    """What the engine recorded of the `down` above: no container needed a SIGKILL (each left on its stop
    signal; the CDC runner, PID 1 with no handler, used to wait out its grace period), the LBC was gone before
    an app was told to stop, the apps' replicas were told together and all gone before the database was told."""
    events = list(engine_events)

    def moments(action: str, role: str | None = None, service: str | None = None) -> list[int]:
        return [e["timeNano"] for e in events if e["Action"] == action
                and role in (None, e["Actor"]["Attributes"].get("io.deploystack.role"))
                and service in (None, e["Actor"]["Attributes"].get("com.docker.compose.service"))]

    killed = [e["Actor"]["Attributes"]["name"] for e in events
              if (e["Action"] == "kill" and e["Actor"]["Attributes"].get("signal") in ("9", "SIGKILL"))
              or (e["Action"] == "die" and e["Actor"]["Attributes"].get("exitCode") == "137")]
    stopped, gone = moments("kill"), moments("destroy")
    print(f"\ndown: {len(stopped)} containers told to stop, the last of {len(gone)} removed "
          f"{(max(gone) - min(stopped)) / 1e9:.1f} s after the first was told")
    assert killed == []
    apps_told, apps_died = moments("kill", role="apc"), moments("die", role="apc")
    assert len(apps_told) >= 2 and moments("die", service="lbc")
    assert max(moments("die", service="lbc")) < min(apps_told)
    assert max(apps_told) < min(apps_died)  # together: every replica was told before the first one left
    assert max(apps_died) < min(moments("kill", service="db-primary"))
