"""Finding a project's containers by Compose's labels: one place for every command that needs one."""

from __future__ import annotations

import docker
from docker.models.containers import Container

from deploystack import labels
from deploystack.engine.client import engine_errors
from deploystack.errors import UsageError


def is_oneoff(container: Container) -> bool:
    """A `deploystack run`/`manage` container (Compose's one-off): never a replica of its service."""
    return str(container.labels.get(labels.ONEOFF)) == "True"


def project_containers(client: docker.DockerClient, project: str, oneoffs: bool = False) -> list[Container]:
    """The project's service containers; with `oneoffs`, its one-off containers (run, manage) too."""
    with engine_errors("listing containers"):
        found = client.containers.list(all=True, filters={"label": f"{labels.PROJECT}={project}"})
    return [c for c in found if oneoffs or not is_oneoff(c)]


def project_volumes(client: docker.DockerClient, project: str) -> list[str]:
    """The engine names of the project's volumes (made by up, labelled with the project)."""
    with engine_errors("listing the project's volumes"):
        return [v.name or "" for v in client.volumes.list(filters={"label": f"{labels.PROJECT}={project}"})]


def service_container(client: docker.DockerClient, project: str, service: str, number: int = 1,
                      running: bool = False) -> Container:
    """Replica `number` of `service`; with `running`, only a running one. UsageError when there is none."""
    selector: dict[str, object] = {"label": [f"{labels.PROJECT}={project}", f"{labels.SERVICE}={service}",
                                             f"{labels.NUMBER}={number}"]}
    if running:
        selector["status"] = "running"
    with engine_errors(f"looking for {service} of project {project}"):
        found = [c for c in client.containers.list(all=True, filters=selector) if not is_oneoff(c)]
    if not found:
        state = "running " if running else ""
        raise UsageError(f"project {project} has no {state}{service} container (is the stack up? deploystack ps)")
    return found[0]


def running_image(client: docker.DockerClient, project: str, service: str) -> str | None:
    """The image reference replica 1 of `service` was created from, if it runs."""
    try:
        container = service_container(client, project, service, running=True)
    except UsageError:
        return None
    return str(container.attrs.get("Config", {}).get("Image") or "") or None


def remove_service_containers(client: docker.DockerClient, project: str, service: str) -> None:
    with engine_errors(f"removing {service}"):
        for container in client.containers.list(
                all=True, filters={"label": [f"{labels.PROJECT}={project}", f"{labels.SERVICE}={service}"]}):
            if not is_oneoff(container):
                container.remove(force=True, v=True)
