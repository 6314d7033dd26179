"""The benchmarks' own stack: the default blueprint through deploystack.testing (its own project name and
free ports, everything removed at the end, even when a benchmark fails), plus a probe container on the
stack's private network from which a replica can be reached with no LBC in front. The probe has no Compose
labels, so deploystack ignores it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from ruamel.yaml import YAML

from deploystack.testing import StackUnderTest
from tests.conftest import BLUEPRINTS
from tests.e2e.conftest import Stack

PROBE_LIFETIME_S = 3600  # the probe sleeps this long, then exits on its own if a run is killed


class BenchStack(Stack):
    """The e2e suite's Stack helper, with names the benchmarks use."""

    def network(self, name: str) -> str:
        return f"{self.project}_{name}"

    def replica_name(self, app: str, number: int) -> str:
        return f"{self.project}-{app}-{number}"

    @property
    def probe_name(self) -> str:
        return f"{self.project}-bench-probe"

    def running(self, service: str) -> list[Container]:
        """Running containers of a service, by name."""
        return sorted((c for c in self.containers(service) if c.status == "running"), key=lambda c: c.name or "")


def remove_probe(stack: BenchStack) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        stack.docker.containers.get(stack.probe_name).remove(force=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[BenchStack]:
    with StackUnderTest(BLUEPRINTS / "default" / "deploystack.yaml") as under_test:
        bench_stack = BenchStack(under_test, docker.from_env())
        try:
            yield bench_stack
        finally:
            remove_probe(bench_stack)  # its endpoint would keep the network from being removed


@pytest.fixture(scope="session")
def probe(stack: BenchStack) -> Iterator[Container]:
    """A sleeping container from the backend's image on the private network, to exec load clients in."""
    with probe_in(stack) as container:
        yield container


# -- peer stacks of the ACC/MMC benchmark ------------------------------------------------------------


def derive_default_spec(folder: Path, change: Callable[[Any], None]) -> Path:
    """The default blueprint's spec with `change` applied to its data (comments kept), in `folder`, its
    app sources made absolute so that the copy works from anywhere."""
    source = BLUEPRINTS / "default" / "deploystack.yaml"
    yaml = YAML()
    data = yaml.load(source)
    for app in data["apc"]["apps"].values():
        app["source"] = str((source.parent / app["source"]).resolve())
    change(data)
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "deploystack.yaml"
    with spec.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)
    return spec


def remove_project_images(client: docker.DockerClient, project: str) -> None:
    """Untag the app images built for `project` (`<project>/<app>:<hash>`): `down` leaves them, and
    every test stack has a project name of its own. An image that other tags share only loses this tag."""
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{project}/"):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)


@contextlib.contextmanager
def peer_stack(spec: Path, services: list[str]) -> Iterator[BenchStack]:
    """A stack of `services` (and what they need) from `spec`, removed at the end with its probe and
    its app images, also when starting it or a benchmark fails."""
    under_test = StackUnderTest(spec, services=services)
    client = docker.from_env()
    try:
        with under_test:
            bench_stack = BenchStack(under_test, client)
            try:
                yield bench_stack
            finally:
                remove_probe(bench_stack)
    finally:
        remove_project_images(client, under_test.project)


@contextlib.contextmanager
def probe_in(stack: BenchStack) -> Iterator[Container]:
    """What the `probe` fixture gives, for any stack: a sleeping container from the backend's image on
    its private network, removed at the end."""
    image = stack.docker.containers.get(stack.replica_name("backend", 1)).attrs["Config"]["Image"]
    container = stack.docker.containers.run(
        image, entrypoint=["sleep"], command=[str(PROBE_LIFETIME_S)], name=stack.probe_name,
        network=stack.network("private"), labels={"io.deploystack.bench": stack.project}, detach=True,
    )
    try:
        yield container
    finally:
        remove_probe(stack)


def publish(report: dict[str, Any], text: str, path: Path) -> None:
    """Every benchmark's ending: its JSON written to `path` and its table printed, marked when a part
    failed before its last run (`report["complete"]` false)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not report.get("complete", True):
        text += "\n\nINCOMPLETE: a part failed before its last run (see the test output above)"
    print("\n\n" + text + f"\n\nJSON: {path}")
