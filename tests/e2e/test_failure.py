"""A stack that cannot start says which service failed and why, with exit code 4, and `down` cleans up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from tests.conftest import BLUEPRINTS

pytestmark = pytest.mark.docker

SPEC = """\
project: dsfail
lbc:
  ports: {http: 19080, https: 19443}
apc:
  apps:
    broken:
      source: broken
      wsgi: backend.wsgi:application
      routes: [/]
acc: {redis: false, memcached: false, rabbitmq: false}
mmc: {enabled: false}
dbc: {replicas: 0}
"""


def test_a_broken_app_is_named_with_its_logs(tmp_path: Path) -> None:
    source = tmp_path / "broken"
    shutil.copytree(BLUEPRINTS / "default/apps/backend", source,
                    ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__"))
    settings = source / "backend/settings.py"
    # Import-time failures only once the database is configured: collectstatic at build time passes.
    settings.write_text(settings.read_text() + "\nimport os\nif os.environ.get('DB_HOST'):\n"
                        "    raise RuntimeError('deliberately broken settings')\n")
    spec = tmp_path / "deploystack.yaml"
    spec.write_text(SPEC)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(spec)],
                              capture_output=True, text=True, timeout=1200)

    client = docker.from_env()
    try:
        up = cli("up")
        assert up.returncode == 4, up.stdout + up.stderr
        assert "error: service broken-migrate: dsfail-broken-migrate-1 exited with code 1" in up.stderr
        assert "RuntimeError: deliberately broken settings" in up.stderr
        assert "Traceback" not in up.stderr.split("last 30 log lines")[0]  # ours: no traceback of deploystack
    finally:
        down = cli("down", "--volumes")
    assert down.returncode == 0, down.stderr
    label = {"label": "com.docker.compose.project=dsfail"}
    assert client.containers.list(all=True, filters=label) == []
    assert client.networks.list(filters=label) == []
    assert client.volumes.list(filters=label) == []
