"""One-role integration tests: one of our images at a time, run with testcontainers-python's DockerContainer.

The image is the exact tag `deploystack up` would build (built here when missing, as in
tests/unit/test_lbc.py), its environment is the plan's (CONTRACTS.md) with the `${SECRET}` references
filled from the freshly generated secrets, and its port is published on 127.0.0.1 only, on a port the
engine picks. Readiness is the image's own health script, run through `docker exec`. Every container is
removed when its fixture ends, also when the start or the wait failed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The reaper (Ryuk) image cannot be pulled here: each fixture removes its own container instead.
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"

import docker  # noqa: E402
import pytest  # noqa: E402
from ruamel.yaml import YAML  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.wait_strategies import ExecWaitStrategy  # noqa: E402

from deploystack.operations import Session, Target  # noqa: E402
from deploystack.render.project import Rendered  # noqa: E402
from tests.conftest import BLUEPRINTS  # noqa: E402

LOOPBACK = "127.0.0.1"
SECRET_REF = re.compile(r"\$\{([A-Z0-9_]+)\}")


@dataclasses.dataclass
class Project:
    """The default blueprint, generated once into a tmp folder, and a Docker client."""

    rendered: Rendered
    client: docker.DockerClient
    run_id: str

    @property
    def output(self) -> Path:
        return self.rendered.output

    def environment(self, service: str) -> dict[str, str]:
        """The service's environment as compose.yaml gives it, with the generated secrets filled in."""
        secrets = self.rendered.secrets
        return {name: SECRET_REF.sub(lambda m: secrets[m.group(1)], value)
                for name, value in self.rendered.plan.service(service).environment}

    def image(self, service: str) -> str:
        """The tag `deploystack up` uses for the service, built when missing (a cold engine builds it once)."""
        from deploystack.engine import images
        from deploystack.engine.report import Silent

        plan = self.rendered.plan
        only = dataclasses.replace(self.rendered, plan=dataclasses.replace(plan, services=(plan.service(service),)))
        images.ensure_base_images(self.client, only, Silent())
        images.build_images(self.client, only, Silent())
        return self.rendered.images[service]


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        pytest.skip("no Docker engine")
    from deploystack.render.writer import compare, write

    folder = tmp_path_factory.mktemp("integration") / "default"
    shutil.copytree(BLUEPRINTS / "default", folder,
                    ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__", "stack"))
    spec = folder / "deploystack.yaml"
    # A project name of our own: build_images prunes superseded `<project>/...` app tags, and the
    # engine is shared with other people's `demo` stacks. Role image tags do not depend on the name.
    run_id = uuid.uuid4().hex[:8]
    yaml = YAML()
    data = yaml.load(spec)
    data["project"] = f"dsit{run_id}"
    yaml.dump(data, spec)
    rendered = Session(Target(spec, folder / "stack")).rendered
    write(rendered.files, rendered.output, compare(rendered.files, rendered.output))
    return Project(rendered, client, run_id)


@contextmanager
def role_container(project: Project, service: str, port: int, timeout_s: float,
                   volumes: dict[str, str] | None = None,
                   env: dict[str, str] | None = None,
                   writable: dict[str, str] | None = None,
                   mem_limit: str | None = None) -> Iterator[tuple[DockerContainer, int]]:
    """One container of `service`'s image, port `port` published on 127.0.0.1 (engine-picked host port),
    started and waited for with the image's own health script; yields (container, host port).
    `env`: instead of the plan's environment. `volumes` are mounted read-only, `writable` read-write.
    `mem_limit`: instead of the plan's (a smaller one makes a memory bound cheap to test)."""
    planned = project.rendered.plan.service(service)
    health = planned.healthcheck
    assert health is not None, f"{service} has no health check"
    # Hardened as `deploystack up` runs it (docs/security.md): the role must work with only its capabilities.
    container = (
        DockerContainer(project.image(service), cap_drop=list(planned.cap_drop), cap_add=list(planned.cap_add),
                        security_opt=list(planned.security_opt), read_only=planned.read_only,
                        mem_limit=mem_limit or planned.mem_limit, pids_limit=planned.pids_limit)
        .with_name(f"deploystack-it-{service}-{project.run_id}-{uuid.uuid4().hex[:4]}")
        .with_envs(**(env if env is not None else project.environment(service)))
        .waiting_for(ExecWaitStrategy(list(health.test)).with_startup_timeout(timeout_s).with_poll_interval(0.5))
    )
    # with_bind_ports() only takes a port number (it would bind every interface): docker-py's
    # (host_ip,) form publishes on loopback only, on a free port the engine picks, without a race.
    container.ports[f"{port}/tcp"] = (LOOPBACK,)  # type: ignore[assignment]
    container.tmpfs = {t.target: t.options for t in planned.tmpfs}
    for host_path, bind in (volumes or {}).items():
        container.with_volume_mapping(host_path, bind, mode="ro")
    for host_path, bind in (writable or {}).items():
        container.with_volume_mapping(host_path, bind, mode="rw")
    try:
        container.start()
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        bindings = wrapped.ports[f"{port}/tcp"]
        assert [b["HostIp"] for b in bindings] == [LOOPBACK], bindings
        yield container, int(bindings[0]["HostPort"])
    finally:
        container.stop()  # force-removes the container and its anonymous volumes; no-op if never created

