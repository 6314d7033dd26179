"""One demo stack for the whole e2e session, from the project's own pytest plugin, as a user gets it:
`deploystack_stack` brings up the default blueprint (pyproject's deploystack_spec) under a random
project name on free ports, and removes everything at the end. `Stack` adds what these tests need on top."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
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
