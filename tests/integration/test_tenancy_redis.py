"""Each app's own Redis ACL user on the real Redis image, as the plan configures it: an app reads and
writes its own `<app>:` keys and channels only, cannot list, read, write or flush another app's, nor
reconfigure the server; and a real Celery worker, configured by the contrib settings as in a stack (Redis
the broker and the result backend), runs a task with that user, leaving keys under its prefix only."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploystack.plan.tenancy import redis_fanout_channels, redis_password_secret
from tests.integration.conftest import LOOPBACK, Project, role_container
from tests.integration.test_roles import RedisError, Resp

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def redis_port(project: Project) -> Iterator[int]:
    """As planned when Redis is also the broker (`acc.rabbitmq: false`): each user with its fanout channels
    (the default blueprint has RabbitMQ, whose plan gives Redis none)."""
    env = project.environment("redis")
    env["REDIS_APP_USERS"] = ";".join(" ".join((line, *redis_fanout_channels(line.split()[0])))
                                      for line in env["REDIS_APP_USERS"].split(";"))
    with role_container(project, "redis", 6379, timeout_s=60, env=env) as (_, port):
        yield port


def login(project: Project, port: int, app: str) -> Resp:
    conn = Resp(port)
    assert conn.call("AUTH", app, project.rendered.secrets[redis_password_secret(app)]) == "OK"
    return conn


def refused(conn: Resp, *command: str) -> str:
    with pytest.raises(RedisError) as caught:
        conn.call(*command)
    return str(caught.value)


def test_an_app_uses_its_own_keys_and_not_another_apps(project: Project, redis_port: int) -> None:
    backend, frontend = login(project, redis_port, "backend"), login(project, redis_port, "frontend")
    try:
        assert frontend.call("SET", "frontend:secret", "f") == "OK"
        assert backend.call("SET", "backend:k", "b") == "OK" and backend.call("GET", "backend:k") == "b"
        for command in (("GET", "frontend:secret"), ("SET", "frontend:secret", "x"), ("DEL", "frontend:secret"),
                        ("SET", "unprefixed", "x"), ("RENAME", "backend:k", "frontend:k"),
                        ("SUBSCRIBE", "frontend:events"), ("PUBLISH", "frontend:events", "x"),
                        ("PSUBSCRIBE", "frontend:/2.celery.pidbox"), ("PSUBSCRIBE", "*")):
            assert refused(backend, *command).startswith("NOPERM"), command
        # Other databases too: the prefix holds in Celery's (1: results, 2: broker).
        assert backend.call("SELECT", "2") == "OK" and backend.call("LPUSH", "backend:it-list", "t") == 1
        assert refused(backend, "LPUSH", "it-list", "t").startswith("NOPERM")
        assert frontend.call("GET", "frontend:secret") == "f"  # untouched
        # kombu's PSUBSCRIBE to the fanout exchanges (remote control, events): its own, literally named.
        for channel in redis_fanout_channels("backend"):
            assert backend.call("PSUBSCRIBE", channel) == ["psubscribe", channel, 1], channel
            assert backend.call("PUNSUBSCRIBE", channel) == ["punsubscribe", channel, 0], channel
    finally:
        backend.close()
        frontend.close()


@pytest.mark.parametrize("command", [("KEYS", "*"), ("SCAN", "0"), ("RANDOMKEY",), ("FLUSHDB",), ("FLUSHALL",),
                                     ("CONFIG", "GET", "dir"), ("CONFIG", "SET", "dir", "/tmp"), ("ACL", "LIST"),
                                     ("MONITOR",), ("SLOWLOG", "GET"), ("CLIENT", "LIST"), ("PUBSUB", "CHANNELS"),
                                     ("SHUTDOWN",), ("REPLICAOF", "127.0.0.1", "1")])
def test_an_app_cannot_see_every_key_flush_or_reconfigure(project: Project, redis_port: int,
                                                         command: tuple[str, ...]) -> None:
    conn = login(project, redis_port, "backend")
    try:
        assert refused(conn, *command).startswith("NOPERM"), command
    finally:
        conn.close()


def test_the_apps_no_longer_know_the_default_users_password(project: Project) -> None:
    for service in ("backend", "backend-worker", "frontend", "bff"):
        env = project.environment(service)
        values = " ".join(env.values())
        assert project.rendered.secrets["REDIS_PASSWORD"] not in values, service
        assert env["REDIS_URL"].startswith(f"redis://{service.removesuffix('-worker')}:")


def test_a_celery_worker_runs_a_task_with_the_apps_user_under_its_prefix(project: Project, redis_port: int,
                                                                        tmp_path: Path) -> None:
    """Redis as broker (db 2) and result backend (db 1), as with `acc.rabbitmq: false`."""
    celery = pytest.importorskip("celery")
    pytest.importorskip("redis")
    from celery.contrib.testing.worker import start_worker

    from deploystack.contrib.django.conf import settings_from_env

    password = project.rendered.secrets[redis_password_secret("backend")]
    at = f"redis://backend:{password}@{LOOPBACK}:{redis_port}"
    settings = settings_from_env(tmp_path, environ={
        "DEPLOYSTACK_APP": "backend", "CELERY_BROKER_URL": f"{at}/2", "CELERY_RESULT_BACKEND": f"{at}/1",
        "DJANGO_SECRET_KEY": "x" * 50})
    app = celery.Celery(f"it-{uuid.uuid4().hex[:6]}")
    app.conf.update({key.removeprefix("CELERY_").lower(): value for key, value in settings.items()
                     if key.startswith("CELERY_")})
    seen: list[str] = []

    @app.task(name="it.add")  # type: ignore[untyped-decorator]
    def add(x: int, y: int) -> int:
        seen.append(threading.current_thread().name)
        return x + y

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        result: Any = add.delay(20, 22)
        assert result.get(timeout=30) == 42
    assert seen, "the task did not run in the worker"
    admin = Resp(redis_port)
    try:
        assert admin.call("AUTH", project.rendered.secrets["REDIS_PASSWORD"]) == "OK"
        keys = {}
        for db in ("1", "2"):
            assert admin.call("SELECT", db) == "OK"
            keys[db] = admin.call("KEYS", "*")
    finally:
        admin.close()
    assert keys["1"] and keys["2"], keys  # the result, and kombu's bindings
    assert [k for db in keys.values() for k in db if not k.startswith("backend:")] == [], keys  # type: ignore[attr-defined]
