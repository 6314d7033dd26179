"""Last of the e2e session (files run in name order): `down` removes containers and networks, keeps volumes."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.docker


def test_down_removes_containers_and_networks_and_keeps_volumes(stack: Stack) -> None:
    stack.cli("down")
    assert stack.containers() == []
    label = {"label": f"com.docker.compose.project={stack.project}"}
    assert stack.docker.networks.list(filters=label) == []
    assert {v.name for v in stack.docker.volumes.list(filters=label)} >= {f"{stack.project}_db-primary-data"}
