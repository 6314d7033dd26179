"""ACC: Redis, Memcached, RabbitMQ and Elasticsearch, each optional."""

from __future__ import annotations

from deploystack.plan import hardening as h
from deploystack.plan.model import Build, HealthCheck, Mount, Service, Tmpfs
from deploystack.plan.names import Role
from deploystack.plan.secrets import ref
from deploystack.plan.tenancy import (
    rabbitmq_password_secret,
    redis_fanout_channels,
    redis_key_prefix,
    redis_password_secret,
)
from deploystack.spec.models import Stack


def _build(role: str) -> Build:
    return Build(role=role, repo=f"deploystack/{role}", context=f"build/{role}")


def redis_appendonly(stack: Stack) -> bool:
    """AOF on when the spec says so, and by default when Redis holds Celery's queue (losing it loses tasks)."""
    redis = stack.acc.redis
    return redis.appendonly if redis.appendonly is not None else stack.acc.redis_is_broker


def rabbitmq_app_users(stack: Stack) -> tuple[tuple[str, str], ...]:
    """Each app's RabbitMQ user and vhost (both its name) for the entrypoint: its password as a variable of
    its own, and RABBITMQ_APP_USERS, `<user> <vhost> <password variable>` per app, `;` between them."""
    secrets = [rabbitmq_password_secret(app) for app in stack.apc.apps]
    users = ";".join(f"{app} {app} {secret}" for app, secret in zip(stack.apc.apps, secrets, strict=True))
    return (*((secret, ref(secret)) for secret in secrets), ("RABBITMQ_APP_USERS", users))


def redis_app_users(stack: Stack) -> tuple[tuple[str, str], ...]:
    """Each app's Redis ACL user (its name) for the entrypoint: its password as a variable of its own, and
    REDIS_APP_USERS, `<user> <key prefix> <password variable> [<fanout channel>...]` per app, `;` between
    them; the fanout channels (its workers' PSUBSCRIBE) only when Redis is the broker."""
    secrets = [redis_password_secret(app) for app in stack.apc.apps]
    users = ";".join(" ".join((app, redis_key_prefix(app), secret,
                               *(redis_fanout_channels(app) if stack.acc.redis_is_broker else ())))
                     for app, secret in zip(stack.apc.apps, secrets, strict=True))
    return (*((secret, ref(secret)) for secret in secrets), ("REDIS_APP_USERS", users))


def plan_acc(stack: Stack) -> tuple[list[Service], list[str]]:
    acc = stack.acc
    services: list[Service] = []
    if acc.redis.enabled:
        services.append(Service(
            name="redis", role=Role.ACC, build=_build("redis"),
            environment=(("REDIS_PASSWORD", ref("REDIS_PASSWORD")),
                         ("REDIS_MAXMEMORY", acc.redis.maxmemory),
                         ("REDIS_APPENDONLY", "yes" if redis_appendonly(stack) else "no"),
                         *redis_app_users(stack)),
            mounts=(Mount("redis-data", "/data"),),
            # The entrypoint writes redis.conf (the password in it) into /run/redis for redis only.
            cap_add=(h.CHOWN, h.SETUID, h.SETGID), read_only=True, tmpfs=(h.RUN, h.TMP),
            mem_limit=acc.redis.memory, pids_limit=h.PIDS_SMALL,
            healthcheck=HealthCheck(test=("redis-health",), start_period_s=30),
        ))
    if acc.memcached.enabled:
        services.append(Service(
            name="memcached", role=Role.ACC, build=_build("memcached"),
            environment=(("MEMCACHED_MEMORY_MB", str(acc.memcached.memory_mb)),),
            cap_add=(h.SETUID, h.SETGID),  # memcached -u memcache
            read_only=True, tmpfs=(h.TMP,),
            mem_limit=acc.memcached.memory, pids_limit=h.PIDS_SMALL,
            healthcheck=HealthCheck(test=("memcached-health",), start_period_s=30),
        ))
    if acc.rabbitmq.enabled:
        services.append(Service(
            name="rabbitmq", role=Role.ACC, build=_build("rabbitmq"),
            environment=(("RABBITMQ_USER", acc.rabbitmq.user),
                         ("RABBITMQ_PASSWORD", ref("RABBITMQ_PASSWORD")),
                         ("RABBITMQ_VHOST", acc.rabbitmq.vhost),
                         ("RABBITMQ_MANAGEMENT", "1" if acc.rabbitmq.management else "0"),
                         *rabbitmq_app_users(stack)),
            mounts=(Mount("rabbitmq-data", "/var/lib/rabbitmq"),),
            # The entrypoint makes the Erlang cookie (chmod 0400 as rabbitmq's) and the definitions in
            # /run/rabbitmq, then drops to rabbitmq.
            # The server writes its upgrade log (and a crash dump) to /var/log/rabbitmq whatever the config.
            cap_add=h.DROP_TO_USER, read_only=True, tmpfs=(h.RUN, h.TMP, Tmpfs("/var/log/rabbitmq", "16m", "0750")),
            mem_limit=acc.rabbitmq.memory, pids_limit=h.PIDS_RUNTIME,
            healthcheck=HealthCheck(test=("rabbitmq-health",), interval_s=10, timeout_s=15,
                                    start_period_s=120),
            stop_grace_s=30,
        ))
    if acc.elasticsearch.enabled:
        # Registry-only: `up` refuses early when this image is neither present nor pullable.
        services.append(Service(
            name="elasticsearch", role=Role.ACC, build=None, image=acc.elasticsearch.image,
            environment=(("discovery.type", "single-node"), ("xpack.security.enabled", "false"),
                         ("ES_JAVA_OPTS", "-Xms512m -Xmx512m")),
            mounts=(Mount("elasticsearch-data", "/usr/share/elasticsearch/data"),),
            # Its image starts as its own user and writes under its home: no capability, not read-only.
            mem_limit=acc.elasticsearch.memory, pids_limit=h.PIDS_JVM,
            healthcheck=HealthCheck(test=("curl", "-fsS", "http://127.0.0.1:9200/_cluster/health"),
                                    interval_s=10, start_period_s=120),
        ))
    return services, [m.source for s in services for m in s.mounts if not m.bind]
