"""The Docker SDK behind one door: connecting, and turning its exceptions into DeployErrors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import docker.errors
import requests.exceptions

from deploystack.errors import EngineError

DockerClient = docker.DockerClient  # for type hints outside engine/, which may not import docker

ENGINE_HINT = (
    "is a Docker engine running? Start one (`dockerd &`, or `make engine` in deploystack's checkout) "
    "or point DOCKER_HOST at it"
)


DEFAULT_HOST = "unix:///var/run/docker.sock"


def host() -> str:
    """The engine's address: DOCKER_HOST, or docker-py's default socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def is_local(address: str) -> bool:
    """A unix socket means the engine runs here and its paths are this machine's paths."""
    return address.startswith("unix://")


def connect(timeout: float = 120, hint: bool = True) -> docker.DockerClient:
    """The one way to a client: pinged, or an EngineError naming the address. `hint=False` leaves out
    how to start an engine (doctor prints its own fix); doctor also asks for a short timeout."""
    address = host()
    fix = f": {ENGINE_HINT}" if hint else ""
    if is_local(address) and not os.path.exists(address.removeprefix("unix://")):
        raise EngineError(f"cannot reach the Docker engine at {address}: no such socket{fix}")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"cannot reach the Docker engine at {address} ({first_line(exc)}){fix}") from None
    return client


@contextmanager
def engine_errors(doing: str) -> Iterator[None]:
    """Map docker-py and requests failures to EngineError, naming what we were doing."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise EngineError(f"{doing}: the engine refused: {exc.explanation or exc}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"{doing}: {first_line(exc)}; {ENGINE_HINT}") from None


def first_line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_once(client: docker.DockerClient, image: str, command: list[str], **options: object) -> None:
    """Run a throwaway container to completion, then remove it with its anonymous volumes (an image's
    VOLUME that nothing was mounted on would otherwise stay behind, one per run). A non-zero exit raises
    docker.errors.ContainerError, as `containers.run` does."""
    container = client.containers.run(image, command, detach=True, **options)
    try:
        status = container.wait()
        code = int(status.get("StatusCode", 1))
        if code != 0:
            stderr = container.logs(stdout=False, stderr=True)
            raise docker.errors.ContainerError(container, code, command, image, stderr)
    finally:
        container.remove(v=True, force=True)
