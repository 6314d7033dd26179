"""The Docker SDK behind one door: connecting, and turning its exceptions into DeployErrors."""

from __future__ import annotations

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


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"cannot reach the Docker engine ({_short(exc)}): {ENGINE_HINT}") from None
    return client


@contextmanager
def engine_errors(doing: str) -> Iterator[None]:
    """Map docker-py and requests failures to EngineError, naming what we were doing."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise EngineError(f"{doing}: the engine refused: {exc.explanation or exc}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"{doing}: {_short(exc)}; {ENGINE_HINT}") from None


def _short(exc: BaseException) -> str:
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
