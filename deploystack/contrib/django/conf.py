"""Django settings computed from the APC environment (docs/CONTRACTS.md, "APC environment")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_PACKAGE = "deploystack.contrib.django"
MIDDLEWARE_FIRST = f"{_PACKAGE}.middleware.HealthCheckMiddleware"
READ_YOUR_WRITES_MIDDLEWARE = f"{_PACKAGE}.middleware.ReadYourWritesMiddleware"
ROUTER = f"{_PACKAGE}.router.PrimaryReplicaRouter"
HEALTH_PATH = "/healthz"

# Only for runs with no environment (collectstatic at build time, a developer's laptop):
# every deployed container gets DJANGO_SECRET_KEY from stack/.env.
DEV_SECRET_KEY = "django-insecure-deploystack-dev-key-do-not-use-in-production"
REPLICA_PREFIX = "replica_"

_TRUE = {"1", "true", "yes", "on"}
_CACHE_CHOICES = ("redis", "memcached", "locmem")


def settings_from_env(base_dir: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return Django settings for the APC environment (``environ`` defaults to os.environ).

    Never returns MIDDLEWARE: wrap the project's own list with :func:`with_health`.
    """
    env = os.environ if environ is None else environ
    base = Path(base_dir)
    databases = _databases(env, base)
    replicas = [alias for alias in databases if alias.startswith(REPLICA_PREFIX)]
    return {
        "SECRET_KEY": _get(env, "DJANGO_SECRET_KEY") or DEV_SECRET_KEY,
        "DEBUG": (_get(env, "DJANGO_DEBUG") or "0").lower() in _TRUE,
        "ALLOWED_HOSTS": _split(_get(env, "DJANGO_ALLOWED_HOSTS")) or ["localhost", "127.0.0.1", "[::1]"],
        "DATABASES": databases,
        "DATABASE_ROUTERS": [ROUTER] if replicas else [],
        "CACHES": {"default": _cache(env)},
        "STATIC_URL": "/static/",
        "STATIC_ROOT": base / "staticfiles",
        # TLS ends at the LBC, which sets X-Forwarded-Proto; the Host header is passed through
        # as is, so X-Forwarded-Host (which a client could forge) is not trusted.
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
        "USE_X_FORWARDED_HOST": False,
        "DEPLOYSTACK_HEALTH_PATH": HEALTH_PATH,
        # Containers log to stderr; without this, DEBUG=False drops 500 tracebacks.
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["console"], "level": "WARNING"},
        },
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
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"connect_timeout": 5},
    }
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
        "memcached": "django.core.cache.backends.memcached.PyMemcacheCache",
    }[choice]
    cache: dict[str, Any] = {"BACKEND": backend, "LOCATION": available[choice]}
    app = _get(env, "DEPLOYSTACK_APP")
    if app:  # apps share one redis/memcached: keep their keys apart
        cache["KEY_PREFIX"] = app
    return cache
