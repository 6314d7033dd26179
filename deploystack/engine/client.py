"""The Docker SDK behind one door: connecting, and turning its exceptions into DeployErrors."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.context import ContextAPI
from docker.context.config import get_current_context_name
from docker.tls import TLSConfig
from docker.utils import kwargs_from_env

from deploystack.errors import EngineError

DockerClient = docker.DockerClient  # for type hints outside engine/, which may not import docker

ENGINE_HINT = (
    "is a Docker engine running? Start one (`dockerd &`, or `make engine` in deploystack's checkout) "
    "or point DOCKER_HOST at it"
)


LOCAL_SOCKET = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class EngineAddress:
    url: str  # unix://, tcp:// or ssh://
    source: str  # how it was chosen, for messages: "DOCKER_HOST", "Docker context NAME", "the local socket"
    tls: TLSConfig | None = None  # a context's TLS settings (DOCKER_HOST's come from DOCKER_TLS_VERIFY)

    @property
    def local(self) -> bool:
        """A unix socket: the engine runs on this machine, so its paths are this machine's paths."""
        return self.url.startswith("unix://")

    def __str__(self) -> str:
        return f"{self.url} ({self.source})"


def engine_address(environ: Mapping[str, str] = os.environ) -> EngineAddress:
    """The engine the docker CLI would use, in its order: DOCKER_HOST, DOCKER_CONTEXT, the current context
    of ~/.docker/config.json, the local socket. `docker stack deploy` runs that CLI, so the SDK client
    and it always drive the same engine (docker-py before 7.2 reads DOCKER_HOST only)."""
    if environ.get("DOCKER_HOST"):
        return EngineAddress(environ["DOCKER_HOST"], "DOCKER_HOST")
    name = environ.get("DOCKER_CONTEXT") or get_current_context_name()
    if name and name != "default":
        try:
            context = ContextAPI.get_context(name)
        except docker.errors.DockerException as exc:
            raise EngineError(f"the Docker context {name} cannot be read ({first_line(exc)})") from None
        if context is None or not context.Host:
            raise EngineError(f"no Docker context {name} with a Docker endpoint: `docker context ls` lists them")
        return EngineAddress(str(context.Host), f"Docker context {name}", context.TLSConfig or None)
    return EngineAddress(LOCAL_SOCKET, "the local socket")


def client_for(address: EngineAddress, timeout: int = 120) -> docker.DockerClient:
    """An unpinged client of `address` (ssh:// goes through the ssh command, as the docker CLI's does)."""
    params: dict[str, Any] = (kwargs_from_env() if address.source == "DOCKER_HOST"
                              else {"base_url": address.url, "tls": address.tls or False})
    params |= {"timeout": timeout, "use_ssh_client": address.url.startswith("ssh://")}
    if not params.get("tls"):
        return docker.DockerClient(**params)
    # requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace a session's own CA (psf/requests#3829): a
    # remote engine's certificate would be checked against the system's CAs and refused. So these sessions
    # ignore the environment, and the API version docker-py would ask for in its constructor (where the
    # environment still counts) is asked for first, the same way.
    probe = docker.APIClient(version=MINIMUM_DOCKER_API_VERSION, **params)
    probe.trust_env = False
    client = docker.DockerClient(version=str(probe.version(api_version=False)["ApiVersion"]), **params)
    client.api.trust_env = False
    return client


def host() -> str:
    """Where the engine is and how it was chosen (DOCKER_HOST, a Docker context, the local socket)."""
    try:
        return str(engine_address())
    except EngineError as exc:
        return f"an unreadable Docker context ({exc})"


def is_local(address: str) -> bool:
    """A unix socket means the engine runs here and its paths are this machine's paths."""
    return address.startswith("unix://")


def connect(address: EngineAddress | None = None, timeout: int = 120, hint: bool = True) -> docker.DockerClient:
    """The one way to a client of `address` (by default the engine DOCKER_HOST or the Docker context
    names): pinged, or an EngineError naming it. `hint=False` leaves out how to start an engine (doctor
    prints its own fix); doctor also asks for a short timeout."""
    address = address or engine_address()
    fix = f": {ENGINE_HINT}" if hint else ""
    if address.local and not os.path.exists(address.url.removeprefix("unix://")):
        raise EngineError(f"cannot reach the Docker engine at {address}: no such socket{fix}")
    try:
        client = client_for(address, timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"cannot reach the Docker engine at {address} ({first_line(exc)}){fix}") from None
    return client


def build_engine(deploy_to: EngineAddress, environ: Mapping[str, str] = os.environ) -> EngineAddress:
    """Where images for a remote swarm are built and pushed from: DEPLOYSTACK_BUILD_HOST, else this
    machine's engine when the swarm is remote and a local socket exists (the build contexts, the base
    images and the CA bundle are here; the nodes pull from the registry), else the deploying engine."""
    if environ.get("DEPLOYSTACK_BUILD_HOST"):
        return EngineAddress(environ["DEPLOYSTACK_BUILD_HOST"], "DEPLOYSTACK_BUILD_HOST")
    if not deploy_to.local and os.path.exists(LOCAL_SOCKET.removeprefix("unix://")):
        return EngineAddress(LOCAL_SOCKET, "the local socket")
    return deploy_to


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
