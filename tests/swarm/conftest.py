"""The default blueprint on the session's multi-node swarm (tests/cluster/cluster.py: Docker-in-Docker nodes;
the host's engine never joins a swarm, so these tests run beside Compose stacks), deployed by the
deploystack command through DOCKER_HOST with the cluster's registry. The database primary and the data
services run on node 2, the database replica on node 3, the LBC on node 1; apps anywhere.

The stack is package-scoped: it is gone before tests/cluster deploys its own (one LBC on the edge node's
ports at a time).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from ruamel.yaml import YAML

from deploystack.resources import blueprints_root
from deploystack.testing import derive_spec
from tests.cluster.cluster import Cluster, ClusterStack, deployed_stack, swarm_settings


@pytest.fixture(scope="package")
def swarm_node(cluster: Cluster) -> docker.DockerClient:
    """The swarm manager deploystack drives (node 1)."""
    return cluster.manager


@pytest.fixture(scope="package")
def swarm_stack(cluster: Cluster, host_engine: docker.DockerClient,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    folder = tmp_path_factory.mktemp("swarm-stack")
    spec = derive_spec(blueprints_root() / "default" / "deploystack.yaml", folder, f"dsw{secrets.token_hex(2)}",
                       0, 0)
    yaml = YAML()
    data = yaml.load(spec)
    swarm_settings(data, cluster)
    # The load loops here are one client (this host) sending from 4 threads without pause, to count failed
    # requests during updates: on the edge node that client is not the host's own gateway (its traffic comes
    # through the node's container), so lift the per-client limits that would answer it 429.
    data["lbc"]["limits"] = {"rate": 10_000, "burst": 100_000, "connections": 10_000}
    yaml.dump(data, spec)
    with deployed_stack(cluster, host_engine, spec) as stack:
        yield stack


def wanted_tasks(client: docker.DockerClient, project: str, service: str) -> list[dict[str, Any]]:
    """The service's tasks that the swarm wants running: starting (health check not passed yet) or running."""
    return list(client.api.tasks(filters={"service": f"{project}_{service}", "desired-state": "running"}))


def tasks(client: docker.DockerClient, project: str, service: str) -> list[dict[str, Any]]:
    """The service's tasks that run now (healthy: a task with a health check runs once it passes)."""
    return [t for t in wanted_tasks(client, project, service) if t["Status"]["State"] == "running"]
