"""One demo stack for the whole e2e session: the default blueprint, under its own project name and ports,
brought up with the real CLI on a real engine, and removed (volumes too) at the end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests
from ruamel.yaml import YAML

from tests.conftest import BLUEPRINTS

PROJECT = "dse2e"
HTTP_PORT, HTTPS_PORT = 18080, 18443


@dataclass
class Stack:
    spec: Path
    project: str
    docker: docker.DockerClient

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{HTTPS_PORT}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{HTTP_PORT}"

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.https + path, verify=False, timeout=10, **kwargs)  # type: ignore[arg-type]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(self.spec)],
                                capture_output=True, text=True, timeout=1800)
        if check and result.returncode != 0:
            raise AssertionError(f"deploystack {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def containers(self, service: str | None = None) -> list[docker.models.containers.Container]:
        label = [f"com.docker.compose.project={self.project}"]
        if service:
            label.append(f"com.docker.compose.service={service}")
        return list(self.docker.containers.list(all=True, filters={"label": label}))

    def edit_spec(self, change: object) -> None:
        yaml = YAML()
        data = yaml.load(self.spec)
        change(data)  # type: ignore[operator]
        yaml.dump(data, self.spec)


def copy_blueprint(target: Path) -> Path:
    shutil.copytree(BLUEPRINTS / "default", target,
                    ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__"))
    spec = target / "deploystack.yaml"
    yaml = YAML()
    data = yaml.load(spec)
    data["project"] = PROJECT
    data["lbc"]["ports"] = {"http": HTTP_PORT, "https": HTTPS_PORT}
    yaml.dump(data, spec)
    return spec


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = docker.from_env()
    spec = copy_blueprint(tmp_path_factory.mktemp("e2e") / "demo")
    s = Stack(spec, PROJECT, client)
    s.cli("down", "--volumes", check=False)  # leftovers of an interrupted run
    up = subprocess.run([sys.executable, "-m", "deploystack", "up", "-f", str(spec)], text=True, timeout=2400)
    try:
        assert up.returncode == 0, "deploystack up failed (its output is above)"
        yield s
    finally:
        s.cli("down", "--volumes", check=False)
