"""Zero-downtime promises under a bounded load through the LBC: scaling 2→4→2, and a replica killed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Stack
from tests.load import LoadLoop

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def running(stack: Stack) -> Iterator[Stack]:
    stack.cli("up")  # an earlier module may have taken the stack down
    yield stack
    stack.cli("up")  # leave it as the spec says (a killed replica started again)


def hostnames(stack: Stack, app: str) -> set[str]:
    return {c.attrs["Config"]["Hostname"] for c in stack.containers(app) if c.status == "running"}


def test_scale_up_and_down_under_load_drops_nothing(running: Stack) -> None:
    stack = running
    with LoadLoop(stack.https + "/api/health/", threads=4, max_requests=12_000, max_seconds=300) as load:
        load.wait_for(300)
        stack.cli("scale", "backend=4")
        grown = hostnames(stack, "backend")
        assert len(grown) == 4
        seen_before = load.result.total
        load.wait_for(seen_before + 400)
        served_at_four = set(load.result.served_by)
        stack.cli("scale", "backend=2")
        load.wait_for(max(load.result.total + 300, 2000))
    result = load.result
    assert result.failures == [], result.failures[:5]
    assert result.total >= 2000
    assert grown <= served_at_four, "every new replica serves"
    assert len(hostnames(stack, "backend")) == 2
    assert "replicas: 2" in stack.spec.read_text()


def test_a_killed_replica_costs_no_failed_or_slow_get(running: Stack) -> None:
    stack = running
    victim = sorted(stack.containers("backend"), key=lambda c: c.name)[-1]
    with LoadLoop(stack.https + "/api/health/", threads=4, max_requests=6000, max_seconds=120) as load:
        load.wait_for(300)
        victim.kill()
        killed_at = load.result.total
        load.wait_for(killed_at + 1500)
    result = load.result
    assert result.failures == [], result.failures[:5]
    assert max(result.latencies) < 1.0, f"slowest request took {max(result.latencies):.2f}s"


def test_scale_refuses_bad_targets_and_leaves_the_spec_alone(running: Stack) -> None:
    before = running.spec.read_bytes()
    for arg, message in (("apc=0", "at least 1 replica"), ("nosuch=2", "no app named 'nosuch'"),
                         ("apc=x", "must be a whole number")):
        result = running.cli("scale", arg, check=False)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert running.spec.read_bytes() == before
