"""A small stack on the session's multi-node swarm (tests/cluster/cluster.py), deployed by the deploystack
command through DOCKER_HOST, as from another machine: the backend with 3 replicas, PostgreSQL, the LBC.
At the end the stack and the images it built here (and their registry tags) are removed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import docker
import pytest

from tests.cluster.cluster import Cluster, ClusterStack, deployed_stack
from tests.conftest import BLUEPRINTS

APP_REPLICAS = 3
SPEC = """\
project: {project}
lbc:
  bind: 0.0.0.0
  ports: {{http: 8080, https: 8443}}   # the edge node's; scripts/cluster.sh publishes them on 127.0.0.1
apc:
  apps:
    backend:
      source: {backend}
      wsgi: backend.wsgi:application
      replicas: {replicas}
      routes: [/api/]
acc: {{redis: false, memcached: false, rabbitmq: false}}
mmc: false
dbc: {{replicas: 0}}
cdc: false
swarm: {{registry: "{registry}", encrypted: false, update_delay: 3}}
"""

Deployed = ClusterStack  # what the tests here call it


@pytest.fixture(scope="module")  # gone before another module deploys (the edge's ports)
def deployed(cluster: Cluster, host_engine: docker.DockerClient,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    project = f"clu{secrets.token_hex(2)}"
    spec = tmp_path_factory.mktemp("cluster-stack") / "deploystack.yaml"
    spec.write_text(SPEC.format(project=project, backend=BLUEPRINTS / "default" / "apps" / "backend",
                                replicas=APP_REPLICAS, registry=cluster.registry))
    with deployed_stack(cluster, host_engine, spec) as stack:
        yield stack
