"""ACC and workers in the plan: Celery workers from the app's image, the cache choice, AOF when Redis is
the broker, explicit memory limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploystack.errors import SpecError
from deploystack.plan import build_plan
from deploystack.plan.secrets import secret_names
from deploystack.spec import load_stack
from deploystack.spec.edit import parse_scale_args, set_replicas
from tests.conftest import write_spec

BASE = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
      worker: {concurrency: 3, queues: [celery, mail], replicas: 2}
"""


def test_worker_service_runs_celery_from_the_apps_image(tmp_path: Path) -> None:
    plan = build_plan(load_stack(write_spec(tmp_path, BASE)))
    app, worker = plan.service("backend"), plan.service("backend-worker")
    env = dict(worker.environment)
    assert worker.build == app.build and worker.command == ("worker",) and worker.replicas == 2
    assert (env["CELERY_APP"], env["CELERY_CONCURRENCY"], env["CELERY_QUEUES"]) == ("backend", "3", "celery,mail")
    assert env["CELERY_BROKER_URL"].startswith("amqp://backend:${RABBITMQ_PASSWORD_BACKEND}@rabbitmq")
    assert env["CELERY_RESULT_BACKEND"] == "redis://backend:${REDIS_PASSWORD_BACKEND}@redis:6379/1"
    assert "backend-migrate" in worker.depends_on and "rabbitmq" in worker.depends_on
    assert worker.scalable and not worker.upstream


def test_redis_broker_gets_an_aof_and_the_cache_choice_reaches_the_apps(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, BASE + "acc: {rabbitmq: false, memcached: true, cache: memcached}\n")
    plan = build_plan(load_stack(spec))
    env = dict(plan.service("backend-worker").environment)
    # Its own ACL user, and not the cache's database.
    assert env["CELERY_BROKER_URL"] == "redis://backend:${REDIS_PASSWORD_BACKEND}@redis:6379/2"
    assert env["DJANGO_CACHE"] == "memcached"
    assert dict(plan.service("redis").environment)["REDIS_APPENDONLY"] == "yes"
    assert plan.service("redis").mem_limit == "384m" and plan.service("memcached").mem_limit == "128m"


def test_cache_must_be_an_enabled_service(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, BASE + "acc: {memcached: false, cache: memcached}\n"))
    assert [str(p) for p in caught.value.problems] == [
        "acc (line 8): cache is 'memcached', but acc.memcached is not enabled"]


def test_scale_a_worker() -> None:
    assert parse_scale_args(["backend-worker=3"], ["backend"], ["backend"]) == {"backend-worker": 3}
    edited = set_replicas(BASE, {"backend-worker": 4})
    assert "worker: {concurrency: 3, queues: [celery, mail], replicas: 4}" in edited


def test_each_app_gets_its_own_redis_user_and_password_and_no_app_the_default_ones(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, BASE.replace("    backend:\n", "    other-app:\n      source: apps/other\n"
                                             "      wsgi: other.wsgi:application\n    backend:\n"),
                      apps=("backend", "other"))
    stack = load_stack(spec)
    plan = build_plan(stack)
    redis = dict(plan.service("redis").environment)
    assert redis["REDIS_APP_USERS"] == ("other-app other-app: REDIS_PASSWORD_OTHER_APP;"
                                        "backend backend: REDIS_PASSWORD_BACKEND")
    assert (redis["REDIS_PASSWORD_BACKEND"], redis["REDIS_PASSWORD_OTHER_APP"]) == (
        "${REDIS_PASSWORD_BACKEND}", "${REDIS_PASSWORD_OTHER_APP}")
    assert {"REDIS_PASSWORD", "REDIS_PASSWORD_BACKEND", "REDIS_PASSWORD_OTHER_APP"} <= set(secret_names(stack))
    for service, user, secret in (("backend", "backend", "BACKEND"), ("backend-worker", "backend", "BACKEND"),
                                  ("other-app", "other-app", "OTHER_APP")):
        env = dict(plan.service(service).environment)
        assert env["REDIS_URL"] == f"redis://{user}:${{REDIS_PASSWORD_{secret}}}@redis:6379/0"
        assert "REDIS_PASSWORD}" not in " ".join(env.values())  # the default user's: no app has it


def test_on_a_redis_broker_each_user_may_psubscribe_to_its_workers_fanout_channel(tmp_path: Path) -> None:
    plan = build_plan(load_stack(write_spec(tmp_path, BASE + "acc: {rabbitmq: false}\n")))
    users = dict(plan.service("redis").environment)["REDIS_APP_USERS"]
    assert users == ("backend backend: REDIS_PASSWORD_BACKEND backend:/2.celery.pidbox backend:/2.celeryev/worker.* "
                     "backend:/2.celeryev/*")
    assert dict(plan.service("backend-worker").environment)["CELERY_BROKER_URL"].endswith("@redis:6379/2")


def test_no_redis_no_redis_users(tmp_path: Path) -> None:
    stack = load_stack(write_spec(tmp_path, BASE + "acc: {redis: false}\n"))
    assert not [name for name in secret_names(stack) if name.startswith("REDIS_")]
    assert "REDIS_URL" not in dict(build_plan(stack).service("backend").environment)
