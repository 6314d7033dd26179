"""`deploystack prune`: older tags of the role images and of the project's apps go; what any container was
made from, what the spec wants now and the base image stay."""

from __future__ import annotations

import io
import secrets

import docker
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

    # Other stacks on this engine (CI runs another test lane beside this one) may let an image fall out of
    # use, or build one, while this test runs: the second prune may list those, and nothing else.
    in_use = _tags_in_use(client)
    done = stack.cli("prune").stdout
    in_use |= _tags_in_use(client)
    kept = {tag for image in client.api.images() for tag in image.get("RepoTags") or []}
    assert f"removed {stale_role}" in done and f"removed {stale_app}" in done
    for tag in (stale_role, stale_app):
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(tag)
    for tag in running | {BASE_IMAGE}:
        client.images.get(tag)
    again = stack.cli("prune", "--dry-run").stdout
    left = {line.split()[2] for line in again.splitlines() if line.startswith("would remove ")}
    assert not (left & kept) - in_use, f"a second prune still finds what the first should have removed: {again}"
    if not left:
        assert "nothing to remove" in again


def _tags_in_use(client: docker.DockerClient) -> set[str]:
    """The tags of every image a container (running or not) was made from; low-level lists, as prune's own."""
    used = {c["ImageID"] for c in client.api.containers(all=True)}
    return {tag for image in client.api.images() if image["Id"] in used for tag in image.get("RepoTags") or []}
