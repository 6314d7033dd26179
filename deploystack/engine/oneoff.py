"""One-off containers (`run`, `manage`) and commands in running ones (`exec`, `db shell`), attached to the
terminal.

The container is created through the SDK, like a replica (its environment with the secrets resolved,
mounts and networks) but labelled as Compose labels a one-off (`oneoff=True`, a slug, number -1), with no
service alias (nothing may send the app's traffic to it) and no health check. Attaching is left to the
docker CLI (`docker start --attach --interactive`, `docker exec --interactive`): it switches the terminal to
raw mode and follows its size, copies a piped stdin and closes it at its end (`loaddata -`), forwards
signals, which done again over the SDK's attach socket would be a fragile copy of the CLI. The exit status
is the container's own, read through the SDK, and the container is removed afterwards whatever happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

import docker
import docker.errors
from docker.models.containers import Container

from deploystack import labels
from deploystack.engine.apply import hardening_options, service_mounts
from deploystack.engine.client import engine_errors
from deploystack.engine.containers import ContainerSpec, container_spec
from deploystack.engine.lookup import project_containers
from deploystack.errors import EngineError, UsageError
from deploystack.plan.model import Service
from deploystack.plan.names import network_name
from deploystack.render.project import Rendered

ONEOFF_NUMBER = -1  # what Compose labels a one-off's container-number with
STOP_GRACE_S = 10


def oneoff_spec(rendered: Rendered, service: Service, image: str, env: dict[str, str], slug: str) -> ContainerSpec:
    """A one-off container of `service`: a replica's definition with Compose's one-off name and labels,
    `image` (the one its replicas run) and `env` over its environment."""
    base = container_spec(rendered, service, 1)
    return dataclasses.replace(
        base, number=ONEOFF_NUMBER, name=f"{rendered.plan.project}-{service.name}-run-{slug[:12]}", image=image,
        environment=base.environment | env,
        labels=base.labels | {labels.ONEOFF: "True", labels.NUMBER: str(ONEOFF_NUMBER), labels.SLUG: slug},
    )


def running_services(client: docker.DockerClient, project: str) -> dict[str, list[Container]]:
    """The project's running service containers by service, replicas in number order; UsageError when
    none runs (the stack is not up)."""
    found: dict[str, list[Container]] = {}
    for container in project_containers(client, project):
        if container.status == "running":
            found.setdefault(container.labels.get(labels.SERVICE, ""), []).append(container)
    if not found:
        raise UsageError(f"project {project} is not up (no container of it runs): deploystack up first")
    for replicas in found.values():
        replicas.sort(key=lambda c: int(c.labels.get(labels.NUMBER, "1")))
    return found


def run(client: docker.DockerClient, rendered: Rendered, app: str, command: Sequence[str],
        env: dict[str, str]) -> int:
    """Run `command` in a new one-off container of `app`, attached; its exit code."""
    project = rendered.plan.project
    service = rendered.plan.service(app)
    replicas = running_services(client, project).get(app, [])
    # The image the replicas run (a rollback may have pinned an older one); with none running (its
    # migrations failed, say), the image `up` would give it.
    image = str(replicas[0].attrs.get("Config", {}).get("Image") or "") if replicas else rendered.images[app]
    with engine_errors(f"looking for image {image}"):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise UsageError(f"image {image} of {app} is not built: deploystack up first") from None
        missing = [name for name in service.networks
                   if not client.networks.list(names=[network_name(project, name)])]
    if missing:
        raise UsageError(f"project {project} has no network {', '.join(missing)}: deploystack up first")
    spec = oneoff_spec(rendered, service, image, env, secrets.token_hex(32))
    tty = on_terminal()
    first, *others = service.networks
    with engine_errors(f"creating {spec.name}"):
        container = client.containers.create(
            spec.image, command=list(command), name=spec.name, environment=spec.environment, labels=spec.labels,
            mounts=service_mounts(rendered, service), network=network_name(project, first),
            healthcheck={"test": ["NONE"]}, stdin_open=True, tty=tty, detach=False,
            **hardening_options(service),  # as hardened as the app's replicas
        )
    try:
        with engine_errors(f"connecting {spec.name}"):
            for net in others:
                client.networks.get(network_name(project, net)).connect(container)
        code = attached(["start", "--attach", "--interactive", container.id or spec.name])
        return exit_status(container, code)
    finally:
        with engine_errors(f"removing {spec.name}"), contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


def exit_status(container: Container, cli_code: int) -> int:
    """The one-off's own exit status. The docker CLI returns at once when it is signalled (exit 0, from
    docker 28), while the container it passed the signal to is still stopping; and a CLI killed, or
    detached (Ctrl-P Ctrl-Q), leaves it running: it is stopped then, as the one-off ends with the CLI."""
    with engine_errors(f"waiting for {container.name}"):
        container.reload()
        if container.status == "created":  # it never started: the CLI has said why
            return cli_code
        if container.status == "running":
            container.stop(timeout=STOP_GRACE_S)
        return int(container.wait().get("StatusCode", cli_code))


def exec_in(client: docker.DockerClient, project: str, service: str, number: int, command: Sequence[str],
            known: Sequence[str]) -> int:
    """Run `command` in the running replica `number` of `service` (one of `known`), attached; its exit code."""
    if service not in known:
        raise UsageError(f"no service {service!r} in project {project}; services: {', '.join(known)}")
    running = running_services(client, project)
    replicas = {int(c.labels.get(labels.NUMBER, "1")): c for c in running.get(service, [])}
    if number not in replicas:
        have = (f"running replicas of {service}: {', '.join(map(str, sorted(replicas)))}" if replicas
                else f"running services: {', '.join(sorted(running))}")
        raise UsageError(f"{service} has no running container number {number} ({have})")
    container = replicas[number]
    return attached(["exec", "--interactive", *(["--tty"] if on_terminal() else []),
                     container.id or container.name or "", *command])


def on_terminal() -> bool:
    """A TTY for the command when deploystack's stdin and stdout are both one: `shell` and `createsuperuser`
    at a prompt are interactive, and `dumpdata > file` gets the command's bytes (a TTY would end its
    lines in CR LF)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def attached(arguments: list[str]) -> int:
    """Run the docker CLI with `arguments` on this terminal; its exit code (128+N when killed by signal N)."""
    cli = shutil.which("docker")
    if cli is None:
        raise EngineError("the docker command is needed to attach to a container (Debian: apt-get install "
                          "docker-cli, or docker.io)")
    process = subprocess.Popen([cli, *arguments])

    def forward(signum: int, frame: FrameType | None) -> None:
        process.send_signal(signum)

    # Ctrl-C reaches the CLI too (same process group), which passes it to the container; we wait for the
    # end. A SIGTERM or SIGHUP sent to us alone is passed on the same way.
    handlers = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, forward), (signal.SIGHUP, forward))}
    try:
        code = process.wait()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
