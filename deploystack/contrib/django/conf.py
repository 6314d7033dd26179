"""Django settings computed from the APC environment (docs/CONTRACTS.md, "APC environment")."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.utils.encoding import filepath_to_uri

_PACKAGE = "deploystack.contrib.django"
MIDDLEWARE_FIRST = f"{_PACKAGE}.middleware.HealthCheckMiddleware"
READ_YOUR_WRITES_MIDDLEWARE = f"{_PACKAGE}.middleware.ReadYourWritesMiddleware"
ROUTER = f"{_PACKAGE}.router.PrimaryReplicaRouter"
# Named only by its dotted path: importing it needs django-storages and boto3.
MEDIA_STORAGE = f"{_PACKAGE}.storage.MediaStorage"
HEALTH_PATH = "/healthz"
MEDIA_URL = "/media/"  # where the LBC serves the media bucket

# The APC Dockerfile runs collectstatic with DEPLOYSTACK_BUILD=1 and no key: that run (and only it) gets
# a random key thrown away with the process. The entrypoint of every running container unsets it, so a
# deployed app without DJANGO_SECRET_KEY refuses to start instead of signing with a known key.
BUILD_FLAG = "DEPLOYSTACK_BUILD"
# Keys known to the world: refused at runtime like an empty one.
KNOWN_KEYS = frozenset({"build-only-dummy", "django-insecure-deploystack-dev-key-do-not-use-in-production"})
# The TLS mode of the LBC (lbc.tls), from the plan; HSTS only when browsers accept the certificate.
TLS_MODE = "DEPLOYSTACK_TLS"
HSTS_SECONDS = 365 * 24 * 3600
REPLICA_PREFIX = "replica_"

_TRUE = {"1", "true", "yes", "on"}
_CACHE_CHOICES = ("redis", "memcached", "locmem")

# With acks_late, a Redis broker hands a task that nobody acknowledged (its worker was killed) to
# another worker this many seconds after it was taken (plus up to 10 s); it must be longer than the
# longest task (or ETA/countdown), or a task still running is started a second time. The environment's
# CELERY_VISIBILITY_TIMEOUT overrides it. RabbitMQ redelivers as soon as the connection drops.
CELERY_VISIBILITY_TIMEOUT = 3600
CELERY_RESULT_EXPIRES = 24 * 3600  # seconds a task's result stays in the result backend
_REDIS_SCHEMES = ("redis", "rediss", "sentinel")


def settings_from_env(base_dir: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return Django settings for the APC environment (``environ`` defaults to os.environ).

    Never returns MIDDLEWARE: wrap the project's own list with :func:`with_health`.
    """
    env = os.environ if environ is None else environ
    base = Path(base_dir)
    databases = _databases(env, base)
    replicas = [alias for alias in databases if alias.startswith(REPLICA_PREFIX)]
    media_base = _media_url(env)
    return {
        "SECRET_KEY": _secret_key(env),
        "DEBUG": (_get(env, "DJANGO_DEBUG") or "0").lower() in _TRUE,
        "ALLOWED_HOSTS": _split(_get(env, "DJANGO_ALLOWED_HOSTS")) or ["localhost", "127.0.0.1", "[::1]"],
        "DATABASES": databases,
        "DATABASE_ROUTERS": [ROUTER] if replicas else [],
        "CACHES": {"default": _cache(env)},
        # Static files stay in the image, served by its nginx; media go to the object store.
        # An app routed under a prefix (/api/) serves its static files there: /static/ may be another app's.
        "STATIC_URL": _get(env, "DJANGO_STATIC_URL") or "/static/",
        "STATIC_ROOT": base / "staticfiles",
        "MEDIA_URL": media_base,
        "MEDIA_ROOT": base / "media",
        "STORAGES": _storages(env, media_base),
        # TLS ends at the LBC, which sets X-Forwarded-Proto; the Host header is passed through
        # as is, so X-Forwarded-Host (which a client could forge) is not trusted.
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
        "USE_X_FORWARDED_HOST": False,
        **_https(env),
        "DEPLOYSTACK_HEALTH_PATH": HEALTH_PATH,
        # Containers log to stderr; without this, DEBUG=False drops 500 tracebacks.
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["console"], "level": "WARNING"},
        },
        **_celery(env),
    }


def _secret_key(env: Mapping[str, str]) -> str:
    key = _get(env, "DJANGO_SECRET_KEY")
    if key is None and _get(env, BUILD_FLAG) == "1":
        return "build-" + secrets.token_urlsafe(48)  # collectstatic signs nothing; this key dies with it
    if key is None:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is empty or not set: deploystack writes one into "
                                   "stack/.env (run deploystack generate); for a local run, export one")
    if key in KNOWN_KEYS or key.startswith("django-insecure-"):
        raise ImproperlyConfigured(f"DJANGO_SECRET_KEY is {key!r}, a published placeholder: set a secret one "
                                   f"(an image build runs collectstatic with {BUILD_FLAG}=1 and no key)")
    return key


def _https(env: Mapping[str, str]) -> dict[str, Any]:
    """Cookies only over HTTPS (the LBC serves the site only over HTTPS), HSTS when the certificate is
    not self-signed, and the site's HTTPS origin trusted for CSRF (DJANGO_CSRF_TRUSTED_ORIGINS, from
    the spec's domain and HTTPS port).

    No SECURE_SSL_REDIRECT: the LBC redirects port 80, and apps call each other over plain HTTP on the
    private network (APC_<APP>_URL), which a redirect would break.
    """
    trusted_tls = (_get(env, TLS_MODE) or "self-signed") != "self-signed"
    return {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_HSTS_SECONDS": HSTS_SECONDS if trusted_tls else 0,
        "CSRF_TRUSTED_ORIGINS": _split(_get(env, "DJANGO_CSRF_TRUSTED_ORIGINS")),
    }


def with_health(middleware: list[str]) -> list[str]:
    """Return ``middleware`` with the health check first (it must answer before host validation)."""
    return [MIDDLEWARE_FIRST, *(m for m in middleware if m != MIDDLEWARE_FIRST)]


def _get(env: Mapping[str, str], name: str) -> str | None:
    # compose.yaml passes `${NAME}` through, so an unset variable may arrive as "".
    value = env.get(name, "").strip()
    return value or None


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _databases(env: Mapping[str, str], base: Path) -> dict[str, dict[str, Any]]:
    host = _get(env, "DB_HOST")
    if host is None:
        return {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": base / "db.sqlite3"}}
    port = _get(env, "DB_PORT") or "5432"
    primary: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _get(env, "DB_NAME") or "postgres",
        "USER": _get(env, "DB_USER") or "postgres",
        "PASSWORD": env.get("DB_PASSWORD", ""),
        "HOST": host,
        "PORT": port,
        # Under ASGI each request's queries may run in another thread, and a persistent connection
        # would be left open by every one (Django ticket #33497): connect per request there.
        "CONN_MAX_AGE": 0 if _get(env, "APP_ASGI") else 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"connect_timeout": 5},
    }
    target = _get(env, "DB_TARGET_SESSION_ATTRS")
    if target is not None:  # libpq refuses a server that is not, e.g., read-write (a leader stepping down)
        primary["OPTIONS"] = {**primary["OPTIONS"], "target_session_attrs": target}
    databases = {"default": primary}
    for number, replica in enumerate(_split(_get(env, "DB_REPLICAS")), start=1):
        replica_host, replica_port = _host_port(replica, port)
        databases[f"{REPLICA_PREFIX}{number}"] = {
            **primary,
            "HOST": replica_host,
            "PORT": replica_port,
            # A dead replica is skipped by the router; fail fast so that costs little.
            "OPTIONS": {"connect_timeout": 2},
            # `manage.py test` must not create a database on a read-only replica.
            "TEST": {"MIRROR": "default"},
        }
    return databases


def _host_port(item: str, default_port: str) -> tuple[str, str]:
    host, sep, port = item.rpartition(":")
    if sep and host and port.isdigit() and ":" not in host:
        return host, port
    return item, default_port


def _cache(env: Mapping[str, str]) -> dict[str, Any]:
    available = {
        "redis": _get(env, "REDIS_URL"),
        "memcached": _get(env, "MEMCACHED_LOCATION"),
    }
    choice = (_get(env, "DJANGO_CACHE") or "").lower()
    if choice and choice not in _CACHE_CHOICES:
        raise ImproperlyConfigured(f"DJANGO_CACHE={choice!r}: must be one of {', '.join(_CACHE_CHOICES)}")
    if choice in available and available[choice] is None:
        variable = "REDIS_URL" if choice == "redis" else "MEMCACHED_LOCATION"
        raise ImproperlyConfigured(f"DJANGO_CACHE={choice} but {variable} is not set")
    if not choice:  # both set and no choice: redis wins
        choice = next((name for name, value in available.items() if value), "locmem")
    if choice == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    backend = {
        "redis": "django.core.cache.backends.redis.RedisCache",
        "memcached": f"{_PACKAGE}.cache.PersistentPyMemcacheCache",
    }[choice]
    cache: dict[str, Any] = {"BACKEND": backend, "LOCATION": available[choice]}
    app = _get(env, "DEPLOYSTACK_APP")
    if app:  # apps share one redis/memcached: keep their keys apart (`<app>:<version>:<key>`)
        cache["KEY_PREFIX"] = app
    return cache


def _redis_key_prefix(env: Mapping[str, str]) -> dict[str, str]:
    """Celery's and kombu's `global_keyprefix` for Redis: `<app>:`, the only keys and channels the app's
    Redis ACL user may touch (plan/tenancy.py redis_key_prefix). None outside a stack."""
    app = _get(env, "DEPLOYSTACK_APP")
    return {"global_keyprefix": f"{app}:"} if app else {}


def media_url(base_url: str, key: str) -> str:
    """The public URL of an object store key: ``base_url`` (MEDIA_URL) + the key, URL-quoted."""
    path: str = filepath_to_uri(key.lstrip("/"))
    return base_url.rstrip("/") + "/" + path


def _media_url(env: Mapping[str, str]) -> str:
    url = _get(env, "MEDIA_URL") or MEDIA_URL
    return url if url.endswith("/") else f"{url}/"  # Django requires the trailing slash


def _storages(env: Mapping[str, str], base_url: str) -> dict[str, dict[str, Any]]:
    """Django's STORAGES: media in the S3 bucket when there is one, else files under MEDIA_ROOT."""
    staticfiles = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    endpoint = _get(env, "S3_ENDPOINT_URL")
    if endpoint is None:
        # MEDIA_ROOT in the container: fine for a laptop, lost with the container in a stack.
        return {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}, "staticfiles": staticfiles}
    missing = [name for name in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET") if _get(env, name) is None]
    if missing:
        raise ImproperlyConfigured(f"S3_ENDPOINT_URL is set but {', '.join(missing)} is not")
    options = {
        "endpoint_url": endpoint,
        "access_key": _get(env, "S3_ACCESS_KEY"),
        "secret_key": _get(env, "S3_SECRET_KEY"),
        "bucket_name": _get(env, "S3_BUCKET"),
        # The app's prefix in the shared media bucket: its own S3 key may write nowhere else.
        "location": _get(env, "S3_LOCATION") or "",
        # SeaweedFS and MinIO answer on one host name: no bucket.host virtual hosting.
        "addressing_style": "path",
        "region_name": "us-east-1",
        "signature_version": "s3v4",
        # The bucket is public-read through the LBC's /media/: no ACL header (SeaweedFS has no
        # ACLs), no signed query strings, URLs are MEDIA_URL + key (MediaStorage.url).
        "default_acl": None,
        "querystring_auth": False,
        "media_url": base_url,
        # Like FileSystemStorage: a name already taken gets a suffix instead of being replaced.
        "file_overwrite": False,
    }
    return {"default": {"BACKEND": MEDIA_STORAGE, "OPTIONS": options}, "staticfiles": staticfiles}


def _celery(env: Mapping[str, str]) -> dict[str, Any]:
    """CELERY_* settings, read by ``app.config_from_object("django.conf:settings", namespace="CELERY")``."""
    settings: dict[str, Any] = {
        # A task is acknowledged after it ran, not when a worker took it: a worker that dies
        # mid-task (or whose pool process is killed) leaves it to another worker.
        "CELERY_TASK_ACKS_LATE": True,
        "CELERY_TASK_REJECT_ON_WORKER_LOST": True,
        # A worker reserves one task per process at a time, so no task waits behind a long one.
        "CELERY_WORKER_PREFETCH_MULTIPLIER": 1,
        # With acks_late, a task running when the broker connection drops will be redelivered:
        # stop it rather than let it run twice.
        "CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS": True,
        "CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP": True,
        "CELERY_TASK_TRACK_STARTED": True,  # STARTED between PENDING and SUCCESS
        "CELERY_RESULT_EXPIRES": CELERY_RESULT_EXPIRES,
    }
    broker = _get(env, "CELERY_BROKER_URL")
    backend = _get(env, "CELERY_RESULT_BACKEND")
    if broker is None:
        # No broker (a laptop, a build): tasks run in the caller, and their results stay in memory.
        return settings | {
            "CELERY_BROKER_URL": "memory://",
            "CELERY_RESULT_BACKEND": backend or "cache+memory://",
            "CELERY_TASK_ALWAYS_EAGER": True,
            "CELERY_TASK_STORE_EAGER_RESULT": True,
        }
    settings |= {
        "CELERY_BROKER_URL": broker,
        # rpc:// sends a result back to the process that sent the task, and only there.
        "CELERY_RESULT_BACKEND": backend or "rpc://",
    }
    if urlsplit(broker).scheme in _REDIS_SCHEMES:
        timeout = _seconds(env, "CELERY_VISIBILITY_TIMEOUT", CELERY_VISIBILITY_TIMEOUT)
        settings["CELERY_BROKER_TRANSPORT_OPTIONS"] = {
            "visibility_timeout": timeout,
            # Look for such tasks at every sweep (each 10 s) rather than every tenth (kombu's default).
            "unacked_restore_throttle": 1,
            # Queues, bindings, unacked index and fanout channels under the app's prefix (kombu >= 5.3).
            **_redis_key_prefix(env),
        }
    if urlsplit(settings["CELERY_RESULT_BACKEND"]).scheme in _REDIS_SCHEMES and _redis_key_prefix(env):
        # Results and their pub/sub channels under the app's prefix (Celery >= 5.3).
        settings["CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"] = _redis_key_prefix(env)
    return settings


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    value = _get(env, name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ImproperlyConfigured(f"{name}={value!r}: must be a positive number of seconds")
    return int(value)
