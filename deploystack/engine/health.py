"""Readiness as an object: poll a container until healthy (or a job until exit 0), with a deadline.

On failure or timeout the error names the service, its last state and health-check output, and the
container's last log lines: what a user needs to fix it without a second command.
"""

from __future__ import annotations

import time

import docker
import docker.errors
from docker.models.containers import Container

from deploystack.engine.client import engine_errors
from deploystack.engine.report import Reporter
from deploystack.errors import StackError
from deploystack.plan.model import Service

LOG_LINES = 30
MAX_RESTARTS = 2  # a server that keeps crashing will not get healthy by waiting


def deadline_for(service: Service) -> float:
    """Seconds to wait: the health check's own budget, plus slack for a loaded 2-core machine."""
    hc = service.healthcheck
    if hc is None:
        return 120.0
    return hc.start_period_s + (hc.interval_s + hc.timeout_s) * (hc.retries + 1) + 60.0


class Readiness:
    def __init__(self, client: docker.DockerClient, name: str, service: Service, report: Reporter) -> None:
        self.client = client
        self.name = name
        self.service = service
        self.report = report
        self.deadline = time.monotonic() + deadline_for(service)
        self.ready = False

    def poll(self) -> bool:
        """True once ready; False while still starting; raises StackError when it never will be."""
        if self.ready:
            return True
        with engine_errors(f"inspecting {self.name}"):
            try:
                container = self.client.containers.get(self.name)
            except docker.errors.NotFound:
                raise StackError(f"{self.service.name}: container {self.name} disappeared while starting") from None
        state = container.attrs.get("State", {})
        status = state.get("Status")
        health = (state.get("Health") or {}).get("Status")
        if self.service.one_shot:
            if status == "exited":
                if state.get("ExitCode") == 0:
                    self.ready = True
                    return True
                self._fail(container, f"exited with code {state.get('ExitCode')}")
        elif status in ("exited", "dead") or container.attrs.get("RestartCount", 0) > MAX_RESTARTS:
            self._fail(container, f"stopped (exit code {state.get('ExitCode')})")
        elif status == "running" and health in (None, "healthy"):
            self.ready = True
            return True
        elif health == "unhealthy":
            self._fail(container, "is unhealthy")
        if time.monotonic() > self.deadline:
            self._fail(container, f"not ready after {deadline_for(self.service):.0f}s (state {status}, "
                                  f"health {health or 'none'})")
        return False

    def wait(self) -> None:
        while not self.poll():
            time.sleep(0.5)

    def _fail(self, container: Container, what: str) -> None:
        raise StackError(failure_message(container, self.service.name, what))


def failure_message(container: Container, service: str, what: str) -> str:
    lines = [f"service {service}: {container.name} {what}"]
    probes = ((container.attrs.get("State", {}).get("Health") or {}).get("Log") or [])[-1:]
    for probe in probes:
        output = str(probe.get("Output", "")).strip()
        lines.append(f"last health check (exit {probe.get('ExitCode')}): {output or '(no output)'}")
    try:
        logs = container.logs(tail=LOG_LINES).decode(errors="replace").rstrip()
    except docker.errors.DockerException:
        logs = ""
    lines.append(f"last {LOG_LINES} log lines of {container.name}:" if logs else "(no log output)")
    lines += [f"  {line}" for line in logs.splitlines()]
    lines.append(f"hint: deploystack logs {service}; fix the cause, then deploystack up again")
    return "\n".join(lines)


def wait_ready(client: docker.DockerClient, name: str, service: Service, report: Reporter) -> Readiness:
    return Readiness(client, name, service, report)
