"""APC: one service per Django app (nginx + gunicorn/uWSGI in each replica), plus its migration job."""

from __future__ import annotations

from pathlib import PurePosixPath

from deploystack.plan import hardening as h
from deploystack.plan.dbc import PRIMARY, replica_names
from deploystack.plan.mmc import s3_endpoint
from deploystack.plan.model import Build, HealthCheck, Service, Tmpfs
from deploystack.plan.secrets import escape, ref
from deploystack.spec.models import App, Stack

APP_PORT = 8000
MEDIA_URL = "/media/"  # the LBC serves the media bucket here
APP_UID = 10001  # the `app` user of compose/apc/Dockerfile: nginx and the app server run as it
# The image runs as `app`: no capability at all, and a read-only root. nginx's pid and the app server's
# socket go to /run/app; request bodies nginx buffers, Django's uploads past 2.5 MB and celery beat's
# schedule go to /tmp, which is sized for uploads.
APP_TMPFS = (Tmpfs("/run/app", "16m", "0750", owner=APP_UID), Tmpfs("/tmp", "256m", "1777"))


def worker_service(app_name: str) -> str:
    return f"{app_name}-worker"


def migrate_job(app_name: str) -> str:
    return f"{app_name}-migrate"


def backing_services(stack: Stack) -> tuple[str, ...]:
    """Services every app needs healthy before it starts."""
    acc = stack.acc
    names = [PRIMARY, *replica_names(stack)]
    names += [n for n, on in (("redis", acc.redis.enabled), ("memcached", acc.memcached.enabled),
                              ("rabbitmq", acc.rabbitmq.enabled)) if on]
    if stack.mmc.enabled:
        names.append("media")
    return tuple(names)


def app_environment(stack: Stack, name: str, app: App) -> tuple[tuple[str, str], ...]:
    acc, dbc = stack.acc, stack.dbc
    env: dict[str, str] = {
        "DEPLOYSTACK_PROJECT": stack.project,
        "DEPLOYSTACK_APP": name,
        "DJANGO_SETTINGS_MODULE": app.settings_module,
        "APP_WSGI": app.wsgi,
        "APP_SERVER": app.server,
        "APP_WORKERS": str(app.workers),
        "DJANGO_SECRET_KEY": ref("DJANGO_SECRET_KEY"),
        "DJANGO_ALLOWED_HOSTS": ",".join(dict.fromkeys([stack.domain, "localhost", "127.0.0.1", name])),
        "DJANGO_DEBUG": "0",
        "DB_HOST": PRIMARY,
        "DB_PORT": "5432",
        "DB_NAME": dbc.database,
        "DB_USER": dbc.user,
        "DB_PASSWORD": ref("POSTGRES_PASSWORD"),
        "DB_REPLICAS": ",".join(replica_names(stack)),
    }
    redis_url = "redis://:" + ref("REDIS_PASSWORD") + "@redis:6379/0"
    if acc.redis.enabled:
        env["REDIS_URL"] = redis_url
        env["CELERY_RESULT_BACKEND"] = "redis://:" + ref("REDIS_PASSWORD") + "@redis:6379/1"
    if acc.django_cache:
        env["DJANGO_CACHE"] = acc.django_cache
    if acc.memcached.enabled:
        env["MEMCACHED_LOCATION"] = "memcached:11211"
    if acc.rabbitmq.enabled:
        env["CELERY_BROKER_URL"] = (
            f"amqp://{acc.rabbitmq.user}:" + ref("RABBITMQ_PASSWORD") + f"@rabbitmq:5672/{acc.rabbitmq.vhost}"
        )
    elif acc.redis.enabled:
        # Its own database: the cache's clear() is a FLUSHDB of database 0, which would drop queued tasks.
        env["CELERY_BROKER_URL"] = "redis://:" + ref("REDIS_PASSWORD") + "@redis:6379/2"
    if stack.mmc.enabled:
        env |= {
            "S3_ENDPOINT_URL": s3_endpoint(stack),
            "S3_ACCESS_KEY": ref("S3_ACCESS_KEY"),
            "S3_SECRET_KEY": ref("S3_SECRET_KEY"),
            "S3_BUCKET": stack.mmc.buckets[0],
            "MEDIA_URL": MEDIA_URL,
        }
    for other in stack.apc.apps:
        if other != name:
            env[f"APC_{other.upper().replace('-', '_')}_URL"] = f"http://{other}:{APP_PORT}"
    env |= {key: escape(value) for key, value in app.env.items()}  # the user's word is last
    return tuple(env.items())


def plan_apc(stack: Stack) -> list[Service]:
    services: list[Service] = []
    backing = backing_services(stack)
    for name, app in stack.apc.apps.items():
        build = Build(
            role="apc", repo=f"{stack.project}/{name}", context=f"build/apps/{name}",
            args=(("DJANGO_SETTINGS_MODULE", app.settings_module),),
            app_source=PurePosixPath(app.source) if app.source is not None else None,
            app=name, from_git=app.git is not None,
        )
        env = app_environment(stack, name, app)
        depends = backing

        if app.migrate:
            services.append(Service(
                name=migrate_job(name), role="apc-job", build=build, environment=env,
                command=("migrate",), depends_on=backing, one_shot=True,
                read_only=True, tmpfs=APP_TMPFS, mem_limit=app.memory, pids_limit=h.PIDS,
            ))
            depends = (*backing, migrate_job(name))
        services.append(Service(
            name=name, role="apc", build=build, replicas=app.replicas, environment=env,
            healthcheck=HealthCheck(test=("apc-health",), interval_s=3, start_period_s=90),
            depends_on=depends, command=("serve",), stop_grace_s=25,
            read_only=True, tmpfs=APP_TMPFS, mem_limit=app.memory, pids_limit=h.PIDS,
        ))
        if app.worker is not None:
            worker = app.worker
            services.append(Service(
                name=worker_service(name), role="apc-worker", build=build, replicas=worker.replicas,
                environment=(*env, ("CELERY_APP", worker.app or app.package),
                             ("CELERY_CONCURRENCY", str(worker.concurrency)),
                             ("CELERY_QUEUES", ",".join(worker.queues)),
                             ("CELERY_BEAT", "1" if worker.beat else "0")),
                healthcheck=HealthCheck(test=("apc-worker-health",), interval_s=10, timeout_s=10,
                                        start_period_s=90),
                # A warm shutdown lets running tasks finish; acks_late redelivers what does not.
                depends_on=depends, command=("worker",), stop_grace_s=60,
                read_only=True, tmpfs=APP_TMPFS, mem_limit=worker.memory, pids_limit=h.PIDS,
            ))
    return services
