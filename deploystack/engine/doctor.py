"""What `deploystack doctor` asks the Docker engine. Every docker-py error becomes an EngineError here.

Short timeouts: doctor answers in seconds even when the engine or a registry does not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import docker
import docker.errors
import requests.exceptions

from deploystack import labels
from deploystack.engine.client import engine_errors, first_line, host
from deploystack.engine.images import image_exists
from deploystack.engine.lookup import project_volumes

TIMEOUT_S = 10


@dataclass(frozen=True)
class EngineFacts:
    host: str  # the engine's address and how it was chosen (DOCKER_HOST, a Docker context, the socket)
    version: str
    api_version: str
    root_dir: str  # where the engine keeps images and volumes (on the engine's machine)
    swarm_nodes: int = 0  # the nodes of the swarm it manages (0: not a swarm manager)


def facts(client: docker.DockerClient) -> EngineFacts:
    with engine_errors("asking the engine for its version"):
        version, info = client.version(), client.info()
    swarm = info.get("Swarm") or {}
    nodes = int(swarm.get("Nodes") or 0) if swarm.get("ControlAvailable") else 0
    return EngineFacts(host(), str(version.get("Version", "?")), str(version.get("ApiVersion", "?")),
                       str(info.get("DockerRootDir", "/var/lib/docker")), nodes)


def node_labels(client: docker.DockerClient) -> dict[str, frozenset[str]]:
    """Each node of the swarm (its host name) and the labels it carries set to true."""
    with engine_errors("listing the swarm's nodes"):
        nodes = client.nodes.list()
    return {str(node.attrs["Description"]["Hostname"]):
            frozenset(key for key, value in (node.attrs["Spec"].get("Labels") or {}).items() if value == "true")
            for node in nodes}


def has_image(client: docker.DockerClient, ref: str) -> bool:
    with engine_errors(f"looking for image {ref}"):
        return image_exists(client, ref)


def registry_refusal(client: docker.DockerClient, ref: str) -> str | None:
    """None when a registry answers for `ref` (its manifest, nothing pulled); else why not, in one line."""
    try:
        client.images.get_registry_data(ref)
    except docker.errors.APIError as exc:
        return first_line(exc.explanation or exc)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return first_line(exc)
    return None


@dataclass(frozen=True)
class Published:
    container: str
    host_ip: str
    host_port: int


def published_ports(client: docker.DockerClient, project: str, service: str) -> list[Published]:
    """Host ports published by the running containers of `service` in Compose project `project`."""
    with engine_errors(f"listing the containers of {project}"):
        containers = client.containers.list(
            filters={"label": [f"{labels.PROJECT}={project}", f"{labels.SERVICE}={service}"]})
        return [Published(container.name, binding.get("HostIp", ""), int(binding["HostPort"]))
                for container in containers
                for bindings in (container.ports or {}).values()
                for binding in bindings or ()]


def volume_names(client: docker.DockerClient, project: str) -> list[str]:
    return project_volumes(client, project)


def engine_fix() -> str:
    current = os.environ.get("DOCKER_HOST")
    point = f"or correct DOCKER_HOST (now {current})" if current else "or point DOCKER_HOST at a running engine"
    return ("start an engine as root: `dockerd &` (apt-get install docker.io first if it is missing; "
            f"`make engine` in deploystack's checkout does both), {point}")
