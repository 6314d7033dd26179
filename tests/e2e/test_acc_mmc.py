"""ACC and MMC proven through the demo app, as a user would check them: cache hit after miss, Celery
tasks through RabbitMQ (and Redis), a 1 MB upload served back by the LBC, media backup and restore, and a
worker killed mid-task that loses nothing."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deploystack.testing import StackUnderTest
from tests.conftest import BLUEPRINTS
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def running(stack: Stack) -> Iterator[Stack]:
    stack.cli("up")
    yield stack
    stack.cli("up")


def post(stack: Stack, path: str, **kwargs: object) -> requests.Response:
    return requests.post(stack.https + path, verify=False, timeout=30, **kwargs)  # type: ignore[arg-type]


def wait_task(stack: Stack, task_id: str, seconds: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        state = stack.get(f"/api/tasks/{task_id}/").json()
        if state.get("status") == "SUCCESS":
            return state
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} not done after {seconds}s: {state}")


def test_cache_hit_after_miss(running: Stack) -> None:
    key = secrets.token_hex(4)
    first, second = running.get(f"/api/cached/{key}/"), running.get(f"/api/cached/{key}/")
    assert (first.status_code, first.headers["X-Cache"]) == (200, "MISS")
    assert (second.status_code, second.headers["X-Cache"]) == (200, "HIT")
    assert first.json()["value"] == second.json()["value"]


def test_task_round_trip_through_rabbitmq(running: Stack) -> None:
    accepted = post(running, "/api/tasks/", json={"x": 20, "y": 22})
    assert accepted.status_code == 202, accepted.text
    assert wait_task(running, accepted.json()["id"])["result"] == 42


def test_a_1mb_upload_comes_back_byte_identical_through_the_lbc(running: Stack) -> None:
    body = os.urandom(1024 * 1024)
    created = post(running, "/api/media/", data=body, headers={"Content-Type": "application/octet-stream"})
    assert created.status_code == 201, created.text
    url = created.json()["url"]
    assert url.startswith("/media/")
    served = running.get(url)
    assert served.status_code == 200 and served.content == body


def test_media_backup_wipe_restore(running: Stack, tmp_path: Path) -> None:
    body = os.urandom(64 * 1024)
    url = post(running, "/api/media/", data=body).json()["url"]
    running.cli("media", "backup", str(tmp_path))
    (media,) = running.containers("media")
    media.stop(timeout=10)
    media.client.containers.run(  # wipe the volume, as a lost disk would
        media.attrs["Config"]["Image"], ["bash", "-c", "find /data -mindepth 1 -delete"], entrypoint=[],
        remove=True, network_mode="none", volumes={f"{running.project}_media-data": {"bind": "/data", "mode": "rw"}})
    media.start()
    running.cli("up")  # waits until media is healthy again
    assert running.get(url).status_code == 404
    running.cli("media", "restore", str(tmp_path))
    restored = running.get(url)
    assert restored.status_code == 200, restored.text[:500]
    assert restored.content == body
    assert len(list(tmp_path.glob("media-*-before-restore.tar.gz"))) == 1


def test_services_speak_their_protocols_with_the_generated_credentials(running: Stack) -> None:
    script = (
        "import os, redis, pymemcache.client.base as mc, kombu, boto3\n"
        "assert redis.Redis.from_url(os.environ['REDIS_URL']).ping()\n"
        "try:\n"
        "    redis.Redis(host='redis', password='wrong').ping(); raise SystemExit('wrong password accepted')\n"
        "except redis.AuthenticationError: pass\n"
        "c = mc.Client(os.environ['MEMCACHED_LOCATION']); c.set('k', b'v'); assert c.get('k') == b'v'\n"
        "with kombu.Connection(os.environ['CELERY_BROKER_URL']) as conn: conn.ensure_connection(max_retries=1)\n"
        "s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT_URL'],"
        " aws_access_key_id=os.environ['S3_ACCESS_KEY'], aws_secret_access_key=os.environ['S3_SECRET_KEY'],"
        " region_name='us-east-1')\n"
        "assert os.environ['S3_BUCKET'] in [b['Name'] for b in s3.list_buckets()['Buckets']]\n"
        "print('all ok')\n"
    )
    code, out = running.under_test.exec("backend", ["python", "-c", script])
    assert code == 0 and "all ok" in out, out
    for service in ("redis", "memcached", "rabbitmq", "media", "db-primary"):
        for container in running.containers(service):
            assert not container.attrs["HostConfig"].get("PortBindings"), f"{service} publishes a port"


def test_workers_scale_like_apps(running: Stack) -> None:
    def workers() -> int:
        return len([c for c in running.containers("backend-worker") if c.status == "running"])

    running.cli("scale", "backend-worker=2")
    assert workers() == 2
    assert wait_task(running, post(running, "/api/tasks/", json={"x": 2, "y": 3}).json()["id"])["result"] == 5
    running.cli("scale", "backend-worker=1")
    assert workers() == 1


def test_a_worker_killed_mid_task_does_not_lose_it(running: Stack) -> None:
    accepted = post(running, "/api/tasks/", json={"x": 1, "y": 2, "sleep": 8})
    task_id = accepted.json()["id"]
    deadline = time.monotonic() + 60
    while running.get(f"/api/tasks/{task_id}/").json()["status"] != "STARTED":
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.3)
    for worker in running.containers("backend-worker"):
        worker.kill()
    running.cli("up")  # the worker comes back; the unacknowledged task is delivered again
    assert wait_task(running, task_id, seconds=120)["result"] == 3


def test_task_round_trip_through_redis(tmp_path: Path) -> None:
    """The same worker with Redis as the broker: a stack of just the worker and what it needs."""
    spec = tmp_path / "deploystack.yaml"
    text = (BLUEPRINTS / "default" / "deploystack.yaml").read_text()
    spec.write_text(text.replace("rabbitmq: true", "rabbitmq: false").replace(
        "source: apps/", f"source: {BLUEPRINTS / 'default'}/apps/"))
    with StackUnderTest(spec, services=["backend-worker"]) as stack:
        code, env = stack.exec("backend-worker", ["printenv", "CELERY_BROKER_URL"])
        assert env.startswith("redis://backend:")  # the app's own ACL user, limited to `backend:` keys
        code, out = stack.exec("backend-worker", ["python", "-c",
            "import django; django.setup(); from services.tasks import add; print(add.delay(20, 22).get(timeout=60))"])
        assert code == 0 and out.strip().endswith("42"), out
        # What the worker and the task left in the broker's and the results' databases: all under the prefix.
        for db in ("1", "2"):
            code, keys = stack.exec("redis", ["sh", "-c", f'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli '
                                              f'--no-auth-warning -n {db} --raw keys "*"'])
            assert code == 0 and keys.split(), (db, keys)
            assert [key for key in keys.split() if not key.startswith("backend:")] == [], (db, keys)
