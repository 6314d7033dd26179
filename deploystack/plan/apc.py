"""APC: one service per Django app (nginx + gunicorn/uWSGI/uvicorn in each replica), plus its migration job."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import PurePosixPath

from deploystack.plan import hardening as h
from deploystack.plan.bases import PYTHON_RELEASES, base_image
from deploystack.plan.dbc import PRIMARY, replica_names
from deploystack.plan.mmc import s3_endpoint
from deploystack.plan.model import AppImage, Build, HealthCheck, Service, Tmpfs
from deploystack.plan.names import Role
from deploystack.plan.patroni import database_env, router_services
from deploystack.plan.secrets import app_secret, escape, ref
from deploystack.plan.tenancy import (
    REDIS_BROKER_DB,
    database_of,
    plan_tenancy,
    rabbitmq_password_secret,
    redis_password_secret,
    s3_key_secrets,
    secret_key_secret,
)
from deploystack.spec.models import App, Stack, env_value, has_references

APP_PORT = 8000
MEDIA_URL = "/media/"  # the LBC serves the media bucket here
# pip requirements of each app server, installed into the app's virtualenv beside its dependencies (the
# builder stage compiles uWSGI, with Python built in). uvicorn: websockets for the websocket protocol,
# httptools and uvloop for speed ("uvicorn[standard]" without its development parts: file watching,
# .env and YAML loading).
SERVER_PACKAGES = {
    "gunicorn": ("gunicorn>=22,<24",),
    "uwsgi": ("uwsgi>=2.0.26,<2.1",),
    "uvicorn": ("uvicorn>=0.30,<1", "websockets>=13,<18", "httptools>=0.6,<1", "uvloop>=0.19,<1"),
}
APP_UID = 10001  # the `app` user of compose/apc/Dockerfile.j2 (and of the kit): nginx and the app server run as it
# The image runs as `app`: no capability at all, and a read-only root. nginx's pid and the app server's
# socket go to /run/app; request bodies nginx buffers, Django's uploads past 2.5 MB and celery beat's
# schedule go to /tmp, which is sized for uploads.
APP_TMPFS = (Tmpfs("/run/app", "16m", "0750", owner=APP_UID), Tmpfs("/tmp", "256m", "1777"))


def worker_service(app_name: str) -> str:
    return f"{app_name}-worker"


def migrate_job(app_name: str) -> str:
    return f"{app_name}-migrate"


def static_url(app: App) -> str:
    """Where an app's static files are served through the LBC: /static/ for the app that routes `/`
    (or has no routes), else under its first route, which the LBC sends to it (/api/static/)."""
    return "/static/" if not app.routes or "/" in app.routes else f"{app.routes[0]}static/"


def site_origin(stack: Stack) -> str:
    """The site's HTTPS origin as browsers send it in Origin: https://<domain>[:<port>]."""
    port = stack.lbc.ports.https
    return f"https://{stack.domain}" + ("" if port == 443 else f":{port}")


def backing_services(stack: Stack) -> tuple[str, ...]:
    """Services every app needs healthy before it starts."""
    acc = stack.acc
    names = router_services(stack) or [PRIMARY, *replica_names(stack)]
    names += [n for n, on in (("redis", acc.redis.enabled), ("memcached", acc.memcached.enabled),
                              ("rabbitmq", acc.rabbitmq.enabled)) if on]
    if stack.mmc.enabled:
        names.append("media")
    return tuple(names)


def external_names(name: str, app: App, env_file_names: Collection[str]) -> tuple[str, ...]:
    """The variables of app `name` whose values live in .env, not compose.yaml: its env files' (less those
    `env` sets) and the `env` values that take `${NAME}` from the host."""
    names = [n for n in env_file_names if n not in app.env]
    return (*names, *(key for key, value in app.env.items() if has_references(value)))


def app_environment(stack: Stack, name: str, app: App,
                    env_file_names: Collection[str] = ()) -> tuple[tuple[str, str], ...]:
    """`env_file_names`: the variables the app's env files give it (read when rendering)."""
    acc = stack.acc
    database = database_of(plan_tenancy(stack), name)
    env: dict[str, str] = {
        "DEPLOYSTACK_PROJECT": stack.project,
        "DEPLOYSTACK_APP": name,
        "DJANGO_SETTINGS_MODULE": app.settings_module,
        # APP_WSGI or APP_ASGI: the entrypoint serves what the server takes.
        "APP_ASGI" if app.asgi else "APP_WSGI": app.entry_point,
        "APP_SERVER": app.server,
        "APP_WORKERS": str(app.workers),
        "DJANGO_SECRET_KEY": ref(secret_key_secret(name)),
        "DJANGO_ALLOWED_HOSTS": ",".join(dict.fromkeys([stack.domain, "localhost", "127.0.0.1", name])),
        "DJANGO_DEBUG": "0",
        "DJANGO_STATIC_URL": static_url(app),
        # HSTS in Django only when browsers accept the LBC's certificate; the site's origin for CSRF.
        "DEPLOYSTACK_TLS": stack.lbc.tls,
        "DJANGO_CSRF_TRUSTED_ORIGINS": site_origin(stack),
        "DB_HOST": PRIMARY,
        "DB_PORT": "5432",
        "DB_NAME": database.database,
        "DB_USER": database.role,
        "DB_PASSWORD": ref(database.password_secret),
        "DB_REPLICAS": ",".join(replica_names(stack)),
        **database_env(stack),  # dbc.ha: patroni: the router instead
        # glibc's resolver: a stopped container's name does not resolve on the private network, and
        # the lookup waited 2 x 5 s (Docker's DNS forwards it, with no way out): fail it within 2 s, so a
        # dead replica costs a read that long at most before the router skips it.
        "RES_OPTIONS": "timeout:1 attempts:2",
    }
    # Its own ACL user (named like the app), whose keys and channels all start with `<app>:`: the settings
    # (contrib/django/conf.py) prefix the cache's, Celery's and kombu's keys with it.
    redis_at = f"redis://{name}:" + ref(redis_password_secret(name)) + "@redis:6379"
    if acc.redis.enabled:
        env["REDIS_URL"] = f"{redis_at}/0"
        env["CELERY_RESULT_BACKEND"] = f"{redis_at}/1"
    if acc.django_cache:
        env["DJANGO_CACHE"] = acc.django_cache
    if acc.memcached.enabled:
        env["MEMCACHED_LOCATION"] = "memcached:11211"
    if acc.rabbitmq.enabled:
        # Its own user on its own vhost (both named like the app): no other app's queues, no administration.
        env["CELERY_BROKER_URL"] = f"amqp://{name}:" + ref(rabbitmq_password_secret(name)) + f"@rabbitmq:5672/{name}"
    elif acc.redis.enabled:
        # A database apart from the cache's (0) and the results' (1), as before the ACL users.
        env["CELERY_BROKER_URL"] = f"{redis_at}/{REDIS_BROKER_DB}"
    if stack.mmc.enabled:
        # SeaweedFS: the app's own key, whose rights end at its prefix of the media bucket and its own
        # buckets (plan/tenancy.py); its uploads go under `<app>/` (S3_LOCATION).
        own = stack.mmc.backend == "seaweedfs"
        access, secret = s3_key_secrets(name) if own else ("S3_ACCESS_KEY", "S3_SECRET_KEY")
        env |= {
            "S3_ENDPOINT_URL": s3_endpoint(stack),
            "S3_ACCESS_KEY": ref(access),
            "S3_SECRET_KEY": ref(secret),
            "S3_BUCKET": stack.mmc.buckets[0],
            "MEDIA_URL": MEDIA_URL,
        }
        if own:
            env["S3_LOCATION"] = name
    for other in stack.apc.apps:
        if other != name:
            env[f"APC_{other.upper().replace('-', '_')}_URL"] = f"http://{other}:{APP_PORT}"
    # The app's env files, then the user's word last. Values from outside the spec are .env references.
    external = set(external_names(name, app, env_file_names))
    for key in (*(n for n in env_file_names if n not in app.env), *app.env):
        env.pop(key, None)
        env[key] = ref(app_secret(name, key)) if key in external else escape(env_value(app.env[key]))
    return tuple(env.items())


def app_image(app: App) -> AppImage:
    assets = app.assets
    # uWSGI embeds Python: it links libpython, which Debian's python3 (statically built) does not bring.
    server_runtime = (f"libpython{app.python}",) if app.server == "uwsgi" else ()
    return AppImage(
        base=base_image(PYTHON_RELEASES[app.python]), server_packages=SERVER_PACKAGES[app.server],
        build_packages=tuple(app.packages.build), runtime_packages=(*server_runtime, *app.packages.runtime),
        dependencies=app.dependencies, dockerfile=app.dockerfile,
        assets_command=assets.command if assets else None, assets_output=assets.output if assets else None,
    )


def plan_apc(stack: Stack, env_files: Mapping[str, Collection[str]] | None = None) -> list[Service]:
    """`env_files`: app -> the variable names its env files give it."""
    services: list[Service] = []
    backing = backing_services(stack)
    previous_migration: tuple[str, ...] = ()
    for name, app in stack.apc.apps.items():
        image = app_image(app)
        build = Build(
            role="apc", repo=f"{stack.project}/{name}", context=f"build/apps/{name}",
            args=(("BASE_IMAGE", image.base), ("DJANGO_SETTINGS_MODULE", app.settings_module)),
            app_source=PurePosixPath(app.source) if app.source is not None else None,
            app=name, from_git=app.git is not None, app_image=image,
        )
        env = app_environment(stack, name, app, (env_files or {}).get(name, ()))
        depends = backing

        if app.migrate:
            # One app's migrations at a time: apps share the database, and two `migrate` runs at once race
            # to create the same tables (django_migrations, django_content_type).
            services.append(Service(
                name=migrate_job(name), role=Role.APC_JOB, build=build, environment=env,
                command=("migrate",), depends_on=(*backing, *previous_migration), one_shot=True,
                read_only=True, tmpfs=APP_TMPFS, mem_limit=app.memory, pids_limit=h.PIDS,
            ))
            previous_migration = (migrate_job(name),)
            depends = (*backing, migrate_job(name))
        services.append(Service(
            name=name, role=Role.APC, build=build, replicas=app.replicas, environment=env,
            healthcheck=HealthCheck(test=("apc-health",), interval_s=3, start_period_s=90),
            depends_on=depends, command=("serve",), stop_grace_s=25,
            read_only=True, tmpfs=APP_TMPFS, mem_limit=app.memory, pids_limit=h.PIDS,
        ))
        if app.worker is not None:
            worker = app.worker
            services.append(Service(
                name=worker_service(name), role=Role.APC_WORKER, build=build, replicas=worker.replicas,
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
