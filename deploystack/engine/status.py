"""Reading and tearing down a project's containers: ps, logs, down."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import docker
import docker.errors

from deploystack import labels
from deploystack.engine import teardown
from deploystack.engine.client import engine_errors
from deploystack.engine.lookup import project_containers
from deploystack.engine.report import Reporter
from deploystack.errors import UsageError


@dataclass(frozen=True)
class ContainerRow:
    service: str
    name: str
    number: int
    state: str
    health: str
    ports: str
    image: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ps(client: docker.DockerClient, project: str) -> list[ContainerRow]:
    rows = []
    for c in project_containers(client, project):
        state = c.attrs.get("State", {})
        published = []
        for port, binds in (c.attrs.get("NetworkSettings", {}).get("Ports") or {}).items():
            for bind in binds or []:
                published.append(f"{bind['HostIp']}:{bind['HostPort']}->{port}")
        rows.append(ContainerRow(
            service=c.labels.get(labels.SERVICE, "?"), name=c.name or "", number=int(c.labels.get(labels.NUMBER, "1")),
            state=state.get("Status", c.status), health=(state.get("Health") or {}).get("Status", "-"),
            ports=", ".join(published), image=(c.attrs.get("Config") or {}).get("Image", ""),
        ))
    return sorted(rows, key=lambda r: (r.service, r.number))


def down(client: docker.DockerClient, project: str, volumes: bool, report: Reporter) -> None:
    """Remove the project's containers (one-offs too, as `docker compose down`) in reverse dependency order,
    independent ones together; then its networks and, with `volumes`, its volumes."""
    selector = {"label": f"{labels.PROJECT}={project}"}
    teardown.remove_project_containers(project_containers(client, project, oneoffs=True), report)
    with engine_errors("removing networks"):
        for network in client.networks.list(filters=selector):
            report.step(f"removing network {network.name}")
            network.remove()
    if volumes:
        with engine_errors("removing volumes"):
            found = client.volumes.list(filters=selector)
            for volume in found:
                report.step(f"removing volume {volume.name}")
            teardown.in_parallel(found, lambda volume: volume.remove(force=True))


def logs(client: docker.DockerClient, project: str, service: str | None, follow: bool, tail: int | str,
         emit: Callable[[str, str], None], since: float | None = None, timestamps: bool = False) -> None:
    """Send each log line to `emit(container_name, line)`; with follow, until interrupted. `tail`: lines
    per container or "all"; `since`: UNIX seconds; `timestamps`: each line starts with its RFC 3339 time."""
    containers = [c for c in project_containers(client, project)
                  if service is None or c.labels.get(labels.SERVICE) == service]
    if not containers:
        raise UsageError(f"no containers for {service or 'project ' + project} (is the stack up?)")
    lines: queue.Queue[tuple[str, str] | None] = queue.Queue()

    def pump(container: docker.models.containers.Container) -> None:
        try:
            stream: Iterator[bytes] = container.logs(stream=True, follow=follow, tail=tail, timestamps=timestamps,
                                                     since=since if since and since > 0 else None)
            buffer = b""
            for chunk in stream:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    lines.put((container.name or "", line.decode(errors="replace")))
            if buffer:
                lines.put((container.name or "", buffer.decode(errors="replace")))
        except docker.errors.DockerException:
            pass
        finally:
            lines.put(None)

    for container in containers:
        threading.Thread(target=pump, args=(container,), daemon=True).start()
    finished = 0
    while finished < len(containers):
        item = lines.get()
        if item is None:
            finished += 1
        else:
            emit(*item)
