"""A single-node swarm made for these tests, and the default blueprint deployed on it.

The engine is put in a swarm (`docker swarm init --advertise-addr 127.0.0.1`) only when it is not in one
already, and then leaves it at the end, `docker_gwbridge` included; the node's labels are put back as they
were either way. Leaving a swarm drops the DNS records of containers already running on bridge networks,
so these tests never run beside a Compose stack (`make test` runs them in a step of their own).

DEPLOYSTACK_SWARM_PROJECT=NAME deploys under a fixed project name whose images are kept (for an engine
that cannot build them, e.g. one without network access, loaded with `docker load` beforehand).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from deploystack.render.swarm import NODE_LABELS
from deploystack.resources import blueprints_root
from deploystack.testing import StackUnderTest
from tests.e2e.conftest import Stack

GWBRIDGE = "docker_gwbridge"


def docker_cli(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def swarm_node() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=120)
    made_swarm = client.info()["Swarm"]["LocalNodeState"] != "active"
    had_gwbridge = bool(client.networks.list(names=[GWBRIDGE]))
    if made_swarm:
        docker_cli("swarm", "init", "--advertise-addr", "127.0.0.1")
    node = client.nodes.get(client.info()["Swarm"]["NodeID"])
    labels_before = dict(node.attrs["Spec"].get("Labels") or {})
    node.update({**node.attrs["Spec"], "Labels": labels_before | {label: "true" for label in NODE_LABELS}})
    try:
        yield client
    finally:
        if made_swarm:
            docker_cli("swarm", "leave", "--force")
            if not had_gwbridge:
                for network in client.networks.list(names=[GWBRIDGE]):
                    network.remove()
        else:
            node.reload()
            node.update({**node.attrs["Spec"], "Labels": labels_before})


@pytest.fixture(scope="session")
def swarm_stack(swarm_node: docker.DockerClient) -> Iterator[Stack]:
    spec = blueprints_root() / "default" / "deploystack.yaml"
    under_test = StackUnderTest(spec, engine="swarm", project=os.environ.get("DEPLOYSTACK_SWARM_PROJECT"))
    with under_test:
        yield Stack(under_test, swarm_node)


def wanted_tasks(client: docker.DockerClient, project: str, service: str) -> list[dict[str, Any]]:
    """The service's tasks that the swarm wants running: starting (health check not passed yet) or running."""
    return list(client.api.tasks(filters={"service": f"{project}_{service}", "desired-state": "running"}))


def tasks(client: docker.DockerClient, project: str, service: str) -> list[dict[str, Any]]:
    """The service's tasks that run now (healthy: a task with a health check runs once it passes)."""
    return [t for t in wanted_tasks(client, project, service) if t["Status"]["State"] == "running"]


def task_container(client: docker.DockerClient, project: str, service: str) -> docker.models.containers.Container:
    label = f"com.docker.swarm.service.name={project}_{service}"
    (container,) = client.containers.list(filters={"label": label, "status": "running"})
    return container
