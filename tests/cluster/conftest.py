"""One multi-node swarm for the session (scripts/cluster.sh: three Docker-in-Docker managers, a registry),
and a small stack deployed on it by the deploystack command through DOCKER_HOST, as from another machine.

The cluster has a name and ports of its own (several runs, and a `make cluster`, can be up at once); at the
end the stack, the cluster (containers, volumes, network, cgroups), the images the stack built here and
their registry tags are removed. The host's engine is never in a swarm: every swarm command runs in a node.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from deploystack.testing import free_port
from tests.conftest import BLUEPRINTS

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = ROOT / "scripts" / "cluster.sh"
NODES = 3
APP_REPLICAS = 3
SPEC = """\
project: {project}
lbc:
  bind: 0.0.0.0
  ports: {{http: 8080, https: 8443}}   # the edge node's; scripts/cluster.sh publishes them on 127.0.0.1
apc:
  apps:
    backend:
      source: {backend}
      wsgi: backend.wsgi:application
      replicas: {replicas}
      routes: [/api/]
acc: {{redis: false, memcached: false, rabbitmq: false}}
mmc: false
dbc: {{replicas: 0}}
cdc: false
swarm: {{registry: "{registry}", encrypted: false, update_delay: 3}}
"""


@dataclass
class Cluster:
    name: str
    api_port: int
    registry_port: int
    http_port: int
    https_port: int
    manager: docker.DockerClient = field(init=False)

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.api_port}"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    def node(self, number: int) -> str:
        return f"{self.name}-node{number}"

    def env(self) -> dict[str, str]:
        return {"CLUSTER": self.name, "CLUSTER_API_PORT": str(self.api_port),
                "CLUSTER_REGISTRY_PORT": str(self.registry_port), "CLUSTER_HTTP_PORT": str(self.http_port),
                "CLUSTER_HTTPS_PORT": str(self.https_port)}

    def script(self, *args: str) -> str:
        result = subprocess.run([str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, timeout=600,
                                env=os.environ | self.env())
        assert result.returncode == 0, f"cluster.sh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout


def host_swarm_state(host: docker.DockerClient) -> str:
    return str(host.info()["Swarm"]["LocalNodeState"])


@pytest.fixture(scope="session")
def host_engine() -> docker.DockerClient:
    """This machine's engine, whatever DOCKER_HOST says."""
    return docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=120)


@pytest.fixture(scope="session")
def cluster(host_engine: docker.DockerClient) -> Iterator[Cluster]:
    assert host_swarm_state(host_engine) == "inactive", "the host's engine is in a swarm: these tests never are"
    made = Cluster(f"dsc{secrets.token_hex(2)}", free_port(), free_port(), free_port(), free_port())
    try:
        made.script("up")
        made.manager = docker.DockerClient(base_url=made.docker_host, timeout=120)
        yield made
    finally:
        made.script("down")


@dataclass
class Deployed:
    cluster: Cluster
    project: str
    spec: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The deploystack command, driving the cluster's first manager through DOCKER_HOST."""
        env = os.environ | {"DOCKER_HOST": self.cluster.docker_host}
        result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(self.spec)],
                                capture_output=True, text=True, timeout=1800, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"deploystack {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def get(self, path: str, timeout: float = 5.0) -> requests.Response:
        return requests.get(f"https://127.0.0.1:{self.cluster.https_port}{path}", verify=False, timeout=timeout)

    def tasks(self, service: str) -> list[dict[str, Any]]:
        """The service's tasks the swarm wants running and that run."""
        return [t for t in self.cluster.manager.api.tasks(filters={"service": f"{self.project}_{service}",
                                                                   "desired-state": "running"})
                if t["Status"]["State"] == "running"]

    def node_names(self) -> dict[str, str]:
        return {n.id: n.attrs["Description"]["Hostname"] for n in self.cluster.manager.nodes.list()}

    def served_by(self, service: str) -> dict[str, str]:
        """X-Served-By (a task container's host name: its short id on a swarm) -> the node it runs on."""
        names = self.node_names()
        return {t["Status"]["ContainerStatus"]["ContainerID"][:12]: names[t["NodeID"]] for t in self.tasks(service)}


@pytest.fixture(scope="session")
def deployed(cluster: Cluster, host_engine: docker.DockerClient,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    project = f"clu{secrets.token_hex(2)}"
    folder = tmp_path_factory.mktemp("cluster-stack")
    spec = folder / "deploystack.yaml"
    spec.write_text(SPEC.format(project=project, backend=BLUEPRINTS / "default" / "apps" / "backend",
                                replicas=APP_REPLICAS, registry=cluster.registry))
    stack = Deployed(cluster, project, spec)
    try:
        stack.cli("up", "--engine", "swarm")
        yield stack
    finally:
        stack.cli("down", "--engine", "swarm", "--volumes", check=False)
        # What the build left on this machine: the project's images and their registry tags.
        for image in host_engine.images.list():
            for tag in image.tags:
                if tag.startswith((f"{cluster.registry}/", f"{project}/")):
                    with contextlib.suppress(docker.errors.NotFound):
                        host_engine.images.remove(tag, force=True)
