"""One multi-node swarm for a test session (scripts/cluster.sh: three Docker-in-Docker managers, a registry),
shared by tests/cluster and tests/swarm, and stacks deployed on it by the deploystack command through
DOCKER_HOST over TLS with a client certificate (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), as from another machine.

The fixtures are imported by tests/conftest.py, so that both folders get the same session's cluster. The
cluster has a name and ports of its own (several runs, and a `make cluster`, can be up at once); at the end
it is removed whole (containers, volumes, network, cgroups). The host's engine is never in a swarm: every
swarm command runs in a node.

The edge node (node 1) publishes the LBC's ports 8080/8443 on the host: one stack with an LBC at a time
(the stacks' fixtures are package- or module-scoped, so each stack is gone before the next deploys).
A test that kills a node leaves it down; `restore_nodes` starts it again (the next module's fixture does).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
from docker.tls import TLSConfig
from ruamel.yaml import YAML

from deploystack.engine.client import EngineAddress, client_for
from deploystack.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = ROOT / "scripts" / "cluster.sh"
NODES = 3
EDGE_HTTP, EDGE_HTTPS = 8080, 8443  # the LBC's ports on the edge node (scripts/cluster.sh publishes them)


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

    @property
    def certs(self) -> Path:
        """The cluster's CA and this client's certificate and key (ca.pem, cert.pem, key.pem)."""
        return ROOT / ".cluster" / self.name

    def client_env(self) -> dict[str, str]:
        """What points the docker CLI, docker-py and deploystack at node 1's engine, as from another machine."""
        return {"DOCKER_HOST": self.docker_host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(self.certs)}

    def address(self, client_certificate: bool = True) -> EngineAddress:
        """Node 1's engine, as deploystack reaches it (with or without this client's certificate)."""
        cert = (str(self.certs / "cert.pem"), str(self.certs / "key.pem")) if client_certificate else None
        return EngineAddress(self.docker_host, "the test cluster",
                             TLSConfig(client_cert=cert, ca_cert=str(self.certs / "ca.pem"), verify=True))

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return client_for(self.address(), timeout)

    def node(self, number: int) -> str:
        return f"{self.name}-node{number}"

    def env(self) -> dict[str, str]:
        return {"CLUSTER": self.name, "CLUSTER_CERTS": str(self.certs), "CLUSTER_API_PORT": str(self.api_port),
                "CLUSTER_REGISTRY_PORT": str(self.registry_port), "CLUSTER_HTTP_PORT": str(self.http_port),
                "CLUSTER_HTTPS_PORT": str(self.https_port)}

    def script(self, *args: str) -> str:
        result = subprocess.run([str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, timeout=600,
                                env=os.environ | self.env())
        assert result.returncode == 0, f"cluster.sh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout


def add_node(cluster: Cluster) -> str:
    """`cluster.sh add`: one more node, a worker with no label; its name."""
    return cluster.script("add").split()[-1]


def remove_node(cluster: Cluster, name: str) -> None:
    """`cluster.sh remove N`: drained, out of the swarm, gone."""
    cluster.script("remove", name.rsplit("node", 1)[1])


def host_swarm_state(host: docker.DockerClient) -> str:
    return str(host.info()["Swarm"]["LocalNodeState"])


def ready_nodes(cluster: Cluster) -> set[str]:
    """The nodes the swarm sees ready, as managers it reaches."""
    return {n.attrs["Description"]["Hostname"] for n in cluster.manager.nodes.list()
            if n.attrs["Status"]["State"] == "ready"
            and (n.attrs.get("ManagerStatus") or {}).get("Reachability") == "reachable"}


def restore_nodes(cluster: Cluster, host: docker.DockerClient, timeout_s: float = 180.0) -> list[str]:
    """Start again every node container a test killed (its /var/lib/docker volume kept, so it rejoins the
    swarm as the machine would after a power loss) and wait until the swarm has all NODES ready; the
    nodes restarted."""
    restarted = []
    for number in range(1, NODES + 1):
        container = host.containers.get(cluster.node(number))
        if container.status != "running":
            container.start()
            restarted.append(container.name)
    deadline = time.monotonic() + timeout_s
    while len(ready := ready_nodes(cluster)) < NODES:
        assert time.monotonic() < deadline, f"only {sorted(ready)} ready {timeout_s:.0f} s after restarting {restarted}"
        time.sleep(2)
    return restarted


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
        made.manager = made.client()
        yield made
    finally:
        made.script("down")


@dataclass
class ClusterStack:
    """A stack on the cluster, driven like a user would from this machine: the deploystack command with
    DOCKER_HOST naming the cluster's first manager; the tasks seen through that manager."""

    cluster: Cluster
    project: str
    spec: Path
    host_engine: docker.DockerClient

    @property
    def docker(self) -> docker.DockerClient:
        return self.cluster.manager

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.cluster.https_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.cluster.http_port}"

    def url(self, path: str) -> str:
        return self.https + path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = os.environ | self.cluster.client_env()
        result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(self.spec)],
                                capture_output=True, text=True, timeout=1800, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"deploystack {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def get(self, path: str, timeout: float = 10.0, **kwargs: Any) -> requests.Response:
        return requests.get(self.https + path, verify=False, timeout=timeout, **kwargs)

    def edit_spec(self, change: Callable[[Any], None]) -> None:
        yaml = YAML()
        data = yaml.load(self.spec)
        change(data)
        yaml.dump(data, self.spec)

    def tasks(self, service: str) -> list[dict[str, Any]]:
        """The service's tasks the swarm wants running and that run (healthy, with a health check)."""
        return [t for t in self.docker.api.tasks(filters={"service": f"{self.project}_{service}",
                                                          "desired-state": "running"})
                if t["Status"]["State"] == "running"]

    def node_names(self) -> dict[str, str]:
        return {n.id: n.attrs["Description"]["Hostname"] for n in self.docker.nodes.list()}

    def served_by(self, service: str) -> dict[str, str]:
        """X-Served-By (a task container's host name: its short id on a swarm) -> the node it runs on."""
        names = self.node_names()
        return {t["Status"]["ContainerStatus"]["ContainerID"][:12]: names[t["NodeID"]] for t in self.tasks(service)}

    def hostnames(self, service: str) -> set[str]:
        return set(self.served_by(service))

    def node_docker(self, *args: str) -> tuple[int, str]:
        """`docker ARGS` on the node given first (its own engine, through its container on this host)."""
        node, *rest = args
        code, out = self.host_engine.containers.get(node).exec_run(["docker", *rest])
        return code, out.decode(errors="replace")

    def exec(self, service: str, command: list[str]) -> tuple[int, str]:
        """`command` in the service's (one) running task, on whichever node it runs."""
        (task,) = self.tasks(service)
        node = self.node_names()[task["NodeID"]]
        return self.node_docker(node, "exec", task["Status"]["ContainerStatus"]["ContainerID"], *command)


def swarm_settings(data: Any, cluster: Cluster) -> None:
    """What a spec needs on this cluster: the edge node's LBC ports, its registry, no IPsec (the nodes share
    this machine's kernel, which has no ESP: docs/swarm.md)."""
    data["lbc"] = {**(data.get("lbc") or {}), "bind": "0.0.0.0", "ports": {"http": EDGE_HTTP, "https": EDGE_HTTPS}}
    data["swarm"] = {**(data.get("swarm") or {}), "registry": cluster.registry, "encrypted": False}


@contextlib.contextmanager
def deployed_stack(cluster: Cluster, host_engine: docker.DockerClient, spec: Path) -> Iterator[ClusterStack]:
    """`up --engine swarm` of `spec` (already set for the cluster); at the end `down --volumes`, and the
    project's images and their registry tags on this machine removed."""
    project = str(YAML(typ="safe").load(spec.read_text())["project"])
    stack = ClusterStack(cluster, project, spec, host_engine)
    try:
        stack.cli("up", "--engine", "swarm")
        yield stack
    finally:
        stack.cli("down", "--engine", "swarm", "--volumes", check=False)
        # The low-level list: `images.list()` inspects each image and fails on one that an e2e test
        # removes at the same moment.
        for image in host_engine.api.images():
            for tag in image.get("RepoTags") or []:
                if tag.startswith((f"{cluster.registry}/", f"{project}/")):
                    with contextlib.suppress(docker.errors.NotFound):
                        host_engine.images.remove(tag, force=True)
