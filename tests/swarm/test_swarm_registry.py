"""`swarm.registry`: `up --engine swarm` pushes every image the services run to the registry the spec
names, the services name the registry's copies, and a node that lacks an image pulls it from there.

The registry is Debian's `docker-registry` (the CNCF distribution registry) in a container on
127.0.0.1, which the engine trusts over plain HTTP like any loopback registry. The stack is small (the
backend, PostgreSQL with no replica, the LBC): what is under test is where its images come from.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from deploystack.plan.bases import ROLE_BASE as BASE_IMAGE
from deploystack.testing import StackUnderTest, free_port
from tests.conftest import BLUEPRINTS, eventually
from tests.e2e.conftest import Stack
from tests.swarm.conftest import tasks

pytestmark = pytest.mark.docker

REGISTRY_IMAGE = "deploystack-tests/registry:bookworm"
# No auth section: the package's default names an htpasswd file that does not exist.
REGISTRY_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null \\
    && rm -rf /var/lib/apt/lists/* \\
    && printf '%s\\n' 'version: 0.1' 'storage:' '  filesystem:' '    rootdirectory: /var/lib/docker-registry' \\
              'http:' '  addr: ":5000"' >/etc/docker/registry/config.yml
CMD ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]
"""
SPEC = """\
project: swreg
apc:
  apps:
    backend:
      source: {backend}
      wsgi: backend.wsgi:application
      replicas: 2
      routes: [/api/]
acc: {{redis: false, memcached: false, rabbitmq: false}}
mmc: false
dbc: {{replicas: 0}}
cdc: false
swarm: {{registry: "{registry}"}}
"""


@pytest.fixture(scope="module")
def registry(swarm_node: docker.DockerClient) -> Iterator[str]:
    """A registry on 127.0.0.1:<free port>; at the end, it and every image tagged with its name go."""
    swarm_node.images.build(fileobj=io.BytesIO(REGISTRY_DOCKERFILE.encode()), tag=REGISTRY_IMAGE, rm=True)
    port = free_port()
    container = swarm_node.containers.run(REGISTRY_IMAGE, detach=True, name=f"deploystack-tests-registry-{port}",
                                          ports={"5000/tcp": ("127.0.0.1", port)})
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://{address}/v2/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, container.logs()[-2000:]
            time.sleep(0.3)
        yield address
    finally:
        container.remove(force=True, v=True)
        for image in swarm_node.images.list():
            for tag in image.tags:
                if tag.startswith(address + "/"):
                    with contextlib.suppress(docker.errors.NotFound):
                        swarm_node.images.remove(tag, force=True)  # untags; layers other tags need stay


def service_images(client: docker.DockerClient, project: str) -> dict[str, str]:
    services = client.services.list(filters={"label": f"com.docker.stack.namespace={project}"})
    return {s.name.removeprefix(f"{project}_"): s.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            for s in services}


def test_images_come_from_the_registry_named_in_the_spec(swarm_node: docker.DockerClient, registry: str,
                                                         tmp_path: Path) -> None:
    spec = tmp_path / "deploystack.yaml"
    spec.write_text(SPEC.format(backend=BLUEPRINTS / "default" / "apps" / "backend", registry=registry))
    with StackUnderTest(spec, engine="swarm") as under_test:
        stack = Stack(under_test, swarm_node)
        images = service_images(swarm_node, stack.project)
        assert {"lbc", "backend", "db-primary"} <= set(images)
        for service, image in images.items():
            assert image.startswith(registry + "/"), (service, image)
            repository, tag = image.removeprefix(registry + "/").rsplit(":", 1)
            listed = requests.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10).json()
            assert tag in (listed.get("tags") or []), (image, listed)
        assert stack.get("/api/health/").json()["app"] == "backend"

        # Take the registry's copy of the backend off this node, then have the swarm start new tasks:
        # they run only if the node pulls the image from the registry again.
        swarm_node.images.remove(images["backend"], force=True)  # untags: the local build keeps its own
        assert not any(images["backend"] in image.tags for image in swarm_node.images.list())
        before = {t["ID"] for t in tasks(swarm_node, stack.project, "backend")}
        swarm_node.services.get(f"{stack.project}_backend").force_update()

        def replaced() -> bool:
            running = {t["ID"] for t in tasks(swarm_node, stack.project, "backend")}
            return len(running) == 2 and not running & before

        eventually(replaced, "two new backend tasks running", 180)
        assert any(images["backend"] in image.tags for image in swarm_node.images.list()), "not pulled back"
        assert stack.get("/api/health/").json()["app"] == "backend"
