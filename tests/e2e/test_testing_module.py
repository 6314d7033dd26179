"""deploystack.testing as a user's test would use it, beyond the session fixture: two stacks from one
spec side by side, `services=` for one role, db_url and exec, and cleanup when starting fails."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest

from deploystack.errors import StackError
from deploystack.testing import StackUnderTest
from tests.conftest import BLUEPRINTS

pytestmark = pytest.mark.docker

DEFAULT = BLUEPRINTS / "default" / "deploystack.yaml"


def leftovers(project: str) -> list[str]:
    client = docker.from_env()
    label = {"label": f"com.docker.compose.project={project}"}
    return ([c.name for c in client.containers.list(all=True, filters=label)]
            + [n.name for n in client.networks.list(filters=label)]
            + [v.name for v in client.volumes.list(filters=label)])


def test_two_stacks_from_one_spec_side_by_side() -> None:
    first, second = StackUnderTest(DEFAULT, services=["db-replica-1"]), StackUnderTest(DEFAULT, services=["db-primary"])
    with first, second:
        assert first.project != second.project and first.https_port != second.https_port
        names = {c for c in leftovers(first.project) if c.startswith(first.project)}
        assert {f"{first.project}-db-primary-1", f"{first.project}-db-replica-1-1"} <= names
        assert leftovers(second.project) and not set(leftovers(second.project)) & set(leftovers(first.project))
        # the same row written on each primary stays in its own stack; the replica of the first streams it
        for stack, text in ((first, "first"), (second, "second")):
            code, out = stack.exec("db-primary", ["psql", "-U", "postgres", "-d", "backend", "-qtAc",
                                                  f"CREATE TABLE t(x text); INSERT INTO t VALUES ('{text}');"
                                                  "SELECT x FROM t"])
            assert code == 0 and out.strip() == text, out
        assert first.db_url().startswith("postgresql://backend:") and first.db_url("replica_1") != first.db_url()
        for _ in range(50):
            code, out = first.exec("db-replica-1",
                                   ["psql", "-U", "postgres", "-d", "backend", "-qtAc", "SELECT x FROM t"])
            if code == 0 and out.strip() == "first":
                break
        assert out.strip() == "first"
    assert leftovers(first.project) == [] and leftovers(second.project) == []
    assert not first.folder.exists()


def test_a_start_that_fails_leaves_nothing_and_shows_the_logs(tmp_path: Path) -> None:
    source = tmp_path / "app"
    shutil.copytree(BLUEPRINTS / "default/apps/backend", source,
                    ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__"))
    settings = source / "backend/settings.py"
    settings.write_text(settings.read_text() + "\nimport os\nif os.environ.get('DB_HOST'):\n"
                        "    raise RuntimeError('broken on purpose')\n")
    spec = tmp_path / "deploystack.yaml"
    spec.write_text("project: broken\napc:\n  apps:\n    backend:\n      source: app\n"
                    "      wsgi: backend.wsgi:application\n      routes: [/]\n"
                    "acc: {redis: false, memcached: false, rabbitmq: false}\nmmc: {enabled: false}\n"
                    "dbc: {replicas: 0}\n")
    stack = StackUnderTest(spec)
    with pytest.raises(StackError) as caught:
        stack.start()
    assert "backend-migrate" in str(caught.value) and "RuntimeError: broken on purpose" in str(caught.value)
    assert leftovers(stack.project) == []
    assert not stack.folder.exists()
