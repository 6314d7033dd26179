"""The Docker side of deploystack.testing: finding a service's container, its address, exec."""

from __future__ import annotations

import docker.errors

from deploystack.engine.client import connect, engine_errors
from deploystack.engine.lookup import service_container
from deploystack.errors import UsageError
from deploystack.plan.names import network_name


def private_address(project: str, service: str) -> str:
    container = service_container(connect(), project, service)
    networks = container.attrs["NetworkSettings"]["Networks"]
    return str(networks[network_name(project, "private")]["IPAddress"])


def exec_in(project: str, service: str, number: int, command: list[str]) -> tuple[int, str]:
    container = service_container(connect(), project, service, number)
    with engine_errors(f"running {command[0]} in {container.name}"):
        try:
            code, output = container.exec_run(command)
        except docker.errors.APIError as exc:
            raise UsageError(f"cannot run {command[0]} in {container.name}: {exc.explanation}") from None
    return int(code), output.decode(errors="replace")
