"""`deploystack deploy` on the whole demo (Celery worker, RabbitMQ, replicas of the database): reads and
writes keep working while every backend replica is replaced, and so do tasks afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.conftest import Stack
from tests.load import LoadLoop

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def running(stack: Stack) -> Iterator[Stack]:
    stack.cli("up")
    yield stack


class Writer(threading.Thread):
    """POSTs notes one after another, bounded in count and time, each on a new connection: a reload
    closes idle kept-alive connections, and a POST sent on one at that instant cannot be resent (docs/cdc.md).
    Nothing is retried, so a 502 or a dropped connection fails the test."""

    def __init__(self, url: str, max_requests: int = 3000, max_seconds: float = 300) -> None:
        super().__init__(daemon=True)
        self.url, self.max_requests, self.deadline = url, max_requests, time.monotonic() + max_seconds
        self.stopping = threading.Event()
        self.created: list[int] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stopping.is_set() and time.monotonic() < self.deadline and \
                len(self.created) + len(self.failures) < self.max_requests:
            try:
                reply = requests.post(self.url, json={"text": "written during a deploy"}, verify=False, timeout=10,
                                      headers={"Connection": "close"})
                if reply.status_code == 201:
                    self.created.append(int(reply.json()["id"]))
                else:
                    self.failures.append(f"HTTP {reply.status_code}")
            except requests.RequestException as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")


def test_deploy_replaces_every_backend_replica_with_no_failed_read_or_write(running: Stack) -> None:
    stack = running
    before = {c.id for c in stack.containers("backend")}
    writer = Writer(stack.https + "/api/notes/")
    with LoadLoop(stack.https + "/api/health/", threads=3, max_requests=30_000, max_seconds=400) as reads:
        writer.start()
        reads.wait_for(200)
        result = stack.cli("deploy", "backend")
        reads.wait_for(reads.result.total + 200)
        writer.stopping.set()
        writer.join(timeout=30)
    assert "deployed backend" in result.stdout
    assert reads.result.failures == [], reads.result.failures[:5]
    assert writer.failures == [], writer.failures[:5]
    assert len(writer.created) > 20
    after = [c for c in stack.containers("backend") if c.status == "running"]
    assert len(after) == 2 and not before & {c.id for c in after}
    # Every note written during the rollout is there.
    last = stack.get(f"/api/notes/{writer.created[-1]}/")
    assert last.status_code == 200 and last.json()["text"] == "written during a deploy"
    # The worker and the broker still take tasks.
    accepted = requests.post(stack.https + "/api/tasks/", json={"x": 40, "y": 2}, verify=False, timeout=30)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 90
    while (state := stack.get(f"/api/tasks/{accepted.json()['id']}/").json()).get("status") != "SUCCESS":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["result"] == 42
