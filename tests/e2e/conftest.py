"""One demo stack for the whole e2e session, from the project's own pytest plugin, as a user gets it:
`deploystack_stack` brings up the default blueprint (pyproject's deploystack_spec) under a random
project name on free ports, and removes everything at the end. `Stack` adds what these tests need on top.

Stacks shared by several modules: a module marked `shared_stack(SPEC)` gets its stack from `shared_stacks.up(SPEC)`;
the first one up brings it up, and it goes once the next test to run is not marked with that spec (modules that
share one run one after the other: name them so). Each module must leave it as its own tests need it to be."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from ruamel.yaml import YAML

from deploystack.testing import StackUnderTest


@dataclass
class Stack:
    under_test: StackUnderTest
    docker: docker.DockerClient

    @property
    def spec(self) -> Path:
        return self.under_test.spec

    @property
    def project(self) -> str:
        return self.under_test.project

    @property
    def https(self) -> str:
        return self.under_test.url("").rstrip("/")

    @property
    def http(self) -> str:
        return self.under_test.http_url("").rstrip("/")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.https + path, verify=False, timeout=10, **kwargs)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # The stack's output folder, for the commands that take -o (the others ignore the variable).
        env = os.environ | {"DEPLOYSTACK_OUTPUT": str(self.under_test.target.output)}
        result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(self.spec)],
                                capture_output=True, text=True, timeout=1800, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"deploystack {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def containers(self, service: str | None = None) -> list[docker.models.containers.Container]:
        label = [f"com.docker.compose.project={self.project}"]
        if service:
            label.append(f"com.docker.compose.service={service}")
        return list(self.docker.containers.list(all=True, filters={"label": label}))

    def edit_spec(self, change: Callable[[Any], None]) -> None:
        yaml = YAML()
        data = yaml.load(self.spec)
        change(data)
        yaml.dump(data, self.spec)


@pytest.fixture(scope="session")
def stack(deploystack_stack: StackUnderTest) -> Stack:
    return Stack(deploystack_stack, docker.from_env())


class SharedStacks:
    """Stacks several test modules use in turn, one per spec, each up from its first user to its last."""

    def __init__(self) -> None:
        self.running: dict[Path, StackUnderTest] = {}

    def up(self, spec: Path, request: pytest.FixtureRequest,
           reset: Callable[[StackUnderTest], None] | None = None) -> StackUnderTest:
        """The running stack of `spec`: brought up if it is not, else given to `reset` first (back to what the
        spec says, after another module's tests). `request`'s module must be marked shared_stack(spec)."""
        key = spec.resolve()
        if key not in shared_specs(request.node):
            raise pytest.UsageError(f"{request.node.nodeid}: mark the module pytest.mark.shared_stack(<the spec's "
                                    "path>) to use its shared stack, so that it stays up for all its tests")
        if key not in self.running:
            self.running[key] = StackUnderTest(spec).start()
        elif reset is not None:
            reset(self.running[key])
        return self.running[key]

    def release(self, keep: set[Path]) -> None:
        for key in [k for k in self.running if k not in keep]:
            self.running.pop(key).stop()


SHARED = SharedStacks()


def shared_specs(node: pytest.Item | pytest.Collector | None) -> set[Path]:
    return set() if node is None else {Path(m.args[0]).resolve() for m in node.iter_markers("shared_stack")}


@pytest.fixture(scope="session")
def shared_stacks() -> Iterator[SharedStacks]:
    yield SHARED
    SHARED.release(keep=set())  # an interrupted session too


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    SHARED.release(keep=shared_specs(nextitem))
