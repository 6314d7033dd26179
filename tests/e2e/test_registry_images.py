"""Images that only a registry has (Elasticsearch, MinIO): `up` refuses before anything starts and says
how to turn them off or load them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import docker
import pytest

from tests.conftest import BLUEPRINTS

pytestmark = pytest.mark.docker


@pytest.mark.parametrize(("setting", "service", "fix"), [
    ("acc:\n  elasticsearch: true\n", "elasticsearch", "acc.elasticsearch.enabled: false"),
    ("mmc:\n  backend: minio\n", "media", "mmc.backend: seaweedfs"),
])
def test_up_refuses_early_without_a_registry_image(tmp_path: Path, setting: str, service: str, fix: str) -> None:
    spec = tmp_path / "deploystack.yaml"
    spec.write_text(f"project: dsregistry\napc:\n  apps:\n    backend:\n"
                    f"      source: {BLUEPRINTS / 'default/apps/backend'}\n"
                    f"      wsgi: backend.wsgi:application\n{setting}")
    result = subprocess.run([sys.executable, "-m", "deploystack", "up", "-f", str(spec)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stderr
    assert f"error: service {service} needs image" in result.stderr
    assert fix in result.stderr and "docker load" in result.stderr and "Nothing was started" in result.stderr
    assert "Traceback" not in result.stderr
    client = docker.from_env()
    label = {"label": "com.docker.compose.project=dsregistry"}
    assert client.containers.list(all=True, filters=label) == [] and client.networks.list(filters=label) == []
