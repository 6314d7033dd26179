"""`deploystack prune`: older tags of the role images and of the project's apps go; what any container was
made from, what the spec wants now and the base image stay."""

from __future__ import annotations

import io
import secrets

import docker.errors
import pytest

from deploystack.plan.bases import ROLE_BASE as BASE_IMAGE
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.docker


def test_prune_removes_what_nothing_uses_and_keeps_what_the_stack_runs(stack: Stack) -> None:
    stack.cli("up")
    client = stack.docker
    # An image no container was made from, under a role tag no spec renders and an old tag of an app.
    stale_role = f"deploystack/prunetest:{secrets.token_hex(4)}"
    stale_app = f"{stack.project}/backend:{secrets.token_hex(4)}"
    image, _ = client.images.build(fileobj=io.BytesIO(f"FROM {BASE_IMAGE}\nLABEL io.deploystack.test=prune\n".encode()),
                                   tag=stale_role, rm=True)
    image.tag(*stale_app.split(":"))
    running = {c.attrs["Config"]["Image"] for c in stack.containers() if c.status == "running"}
    assert len(running) >= 8

    planned = stack.cli("prune", "--dry-run").stdout
    assert f"would remove {stale_role}" in planned and f"would remove {stale_app}" in planned
    listed = {line.split()[2] for line in planned.splitlines() if line.startswith("would remove ")}
    assert not listed & (running | {BASE_IMAGE})
    client.images.get(stale_role)  # a dry run removes nothing

    done = stack.cli("prune").stdout
    assert f"removed {stale_role}" in done and f"removed {stale_app}" in done
    for tag in (stale_role, stale_app):
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(tag)
    for tag in running | {BASE_IMAGE}:
        client.images.get(tag)
    assert "nothing to remove" in stack.cli("prune", "--dry-run").stdout
