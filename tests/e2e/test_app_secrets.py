"""App secrets outside the spec, on a small stack of its own: a value from an env file reaches the app
(its endpoint answers a hash of it through the LBC) and nothing else (compose.yaml, labels, the image, the
build context); rotating it recreates only the app that uses it, under load, with no failed request."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from deploystack.testing import StackUnderTest
from tests.load import LoadLoop

pytestmark = pytest.mark.docker

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "projects" / "secrets-echo"
FIRST = "first-secret-Zq8#x'y\"z$v"  # quotes, '#' and '$' on purpose: they must reach the app as written
SECOND = "second-secret-Kd3 w9!"

SPEC = f"""\
project: secrets
apc:
  apps:
    echo:                      # uses the secret
      source: {FIXTURE}
      wsgi: echo.wsgi:application
      replicas: 2
      routes: [/echo/]
      migrate: false
      env_file: secrets/echo.env
    plain:                     # does not
      source: {FIXTURE}
      wsgi: echo.wsgi:application
      routes: [/plain/]
      migrate: false
acc: {{redis: false, memcached: false, rabbitmq: false}}
mmc: {{enabled: false}}
dbc: {{replicas: 0}}
"""


def write_secret(folder: Path, value: str) -> None:
    path = folder / "secrets" / "echo.env"
    path.parent.mkdir(exist_ok=True)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'# the echo app\'s secret\nAPP_SECRET="{escaped}"\n', encoding="utf-8")


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def secret_hash(stack: StackUnderTest) -> str:
    reply = requests.get(stack.url("/echo/secret-hash/"), verify=False, timeout=10)
    assert reply.status_code == 200, reply.text[:300]
    return reply.text


def containers(client: docker.DockerClient, project: str, service: str) -> dict[str, str]:
    """name -> id of the running containers of `service`."""
    found = client.containers.list(filters={"label": [f"com.docker.compose.project={project}",
                                                      f"com.docker.compose.service={service}"]})
    return {c.name: c.id for c in found}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUnderTest]:
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "deploystack.yaml").write_text(SPEC, encoding="utf-8")
    write_secret(folder, FIRST)
    with StackUnderTest(folder / "deploystack.yaml") as running:
        running.source_folder = folder  # type: ignore[attr-defined]
        yield running


def test_the_env_file_secret_reaches_the_app_and_nothing_else(stack: StackUnderTest) -> None:
    assert secret_hash(stack) == sha(FIRST)
    plain = requests.get(stack.url("/plain/hello/"), verify=False, timeout=10)
    assert plain.status_code == 200 and plain.text == "hello, and no secret here"
    output = stack.target.output
    compose = (output / "compose.yaml").read_text(encoding="utf-8")
    assert "first-secret" not in compose
    assert "APP_SECRET: ${APP_ECHO__APP_SECRET}" in compose
    env_file = output / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600 and "first-secret" in env_file.read_text(encoding="utf-8")
    # Nowhere in the build contexts, in any file.
    for path in (output / "build").rglob("*"):
        if path.is_file():
            assert b"first-secret" not in path.read_bytes(), path
    client = docker.from_env()
    echo = client.containers.list(filters={"label": f"com.docker.compose.project={stack.project}"})
    assert echo
    for container in echo:
        assert "first-secret" not in json.dumps(container.labels), container.name
    reached = [c for c in echo if c.labels["com.docker.compose.service"] == "echo"]
    assert len(reached) == 2 and all(f"APP_SECRET={FIRST}" in c.attrs["Config"]["Env"] for c in reached)
    image = client.images.get(reached[0].attrs["Config"]["Image"])
    assert "first-secret" not in json.dumps(image.attrs)
    assert all("first-secret" not in json.dumps(step) for step in image.history())


def test_rotating_the_secret_recreates_only_its_app_under_load(stack: StackUnderTest) -> None:
    client = docker.from_env()
    echo_before = containers(client, stack.project, "echo")
    others_before = {s: containers(client, stack.project, s) for s in ("plain", "lbc", "db-primary")}
    assert len(echo_before) == 2 and all(others_before.values())
    write_secret(stack.source_folder, SECOND)  # type: ignore[attr-defined]
    env = os.environ | {"DEPLOYSTACK_OUTPUT": str(stack.target.output)}
    with LoadLoop(stack.url("/echo/secret-hash/"), threads=3, max_requests=20_000, max_seconds=300) as load:
        load.wait_for(100)
        up = subprocess.run([sys.executable, "-m", "deploystack", "up", "-f", str(stack.spec)],
                            capture_output=True, text=True, timeout=600, env=env)
        load.wait_for(load.result.total + 100)
    assert up.returncode == 0, up.stdout + up.stderr
    result = load.result
    print(f"rotation under load: {result.ok} ok, {len(result.failures)} failed, {result.retried} resent "
          f"after a reload closed a kept-alive connection, max latency {max(result.latencies):.2f}s")
    assert result.failures == [], result.failures[:5]
    assert result.ok > 200
    assert secret_hash(stack) == sha(SECOND)
    echo_after = containers(client, stack.project, "echo")
    assert len(echo_after) == 2 and not set(echo_after.values()) & set(echo_before.values())
    assert {s: containers(client, stack.project, s) for s in others_before} == others_before
    # Up again: nothing changes.
    again = subprocess.run([sys.executable, "-m", "deploystack", "up", "-f", str(stack.spec)],
                           capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr
