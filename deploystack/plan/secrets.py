"""Names of the generated secrets, and how a plan refers to them.

Values live only in the output's .env (mode 0600); compose.yaml and the plan hold `${NAME}` references,
which Compose interpolates from .env and the engine resolves the same way.
"""

from __future__ import annotations

from deploystack.plan.tenancy import (
    db_password_secret,
    rabbitmq_password_secret,
    redis_password_secret,
    s3_key_secrets,
    secret_key_secret,
)
from deploystack.spec.models import Stack

SUPERUSER_SECRET = "DB_SUPERUSER_PASSWORD"  # the .env name of the database superuser's password


def secret_names(stack: Stack) -> tuple[str, ...]:
    # Each app its own Django key and database password (plan/tenancy.py). The shared DJANGO_SECRET_KEY
    # and POSTGRES_PASSWORD of stacks made before stay in their .env, unused.
    # DB_SUPERUSER_PASSWORD: Patroni's superuser, and on a swarm the plain primary's, for the provisioning
    # job that reaches it over the private network (engine/provision.py); unused by Compose's primary.
    names = ["REPLICATION_PASSWORD", SUPERUSER_SECRET]
    for app in stack.apc.apps:
        names += [secret_key_secret(app), db_password_secret(app)]
    if stack.acc.redis.enabled:
        names.append("REDIS_PASSWORD")  # the default user's: the health check, an operator; no app has it
        names += [redis_password_secret(app) for app in stack.apc.apps]
    if stack.acc.rabbitmq.enabled:
        names.append("RABBITMQ_PASSWORD")  # the broker's administrator: no app has it
        names += [rabbitmq_password_secret(app) for app in stack.apc.apps]
    if stack.mmc.enabled:
        names += ["S3_ACCESS_KEY", "S3_SECRET_KEY"]  # the store's own administrator: no app has it
        if stack.mmc.backend == "seaweedfs":  # MinIO: not yet (its policies would be needed)
            names += [name for app in stack.apc.apps for name in s3_key_secrets(app)]
    if stack.cdc.enabled:
        names.append("CDC_WEBHOOK_SECRET")
    if stack.dbc.offsite is not None:
        names.append("OFFSITE_REPLICATION_PASSWORD")
    if stack.dbc.ha == "patroni":
        names.append("PATRONI_RESTAPI_PASSWORD")  # plan/patroni.py SECRETS
        from deploystack.plan import backups, mediabackups  # they refer to secrets with ref(), from this module

        names += backups.secret_names(stack) + mediabackups.secret_names(stack)
    return tuple(names)


def app_secret(app: str, name: str) -> str:
    """The .env name that holds variable `name` of app `app` when its value comes from outside the spec
    (host environment, env file): one per app, so a changed value changes only the apps that use it."""
    return f"APP_{app.upper().replace('-', '_')}__{name}"


def ref(name: str) -> str:
    """A reference to secret `name` in Compose's interpolation syntax."""
    return "${" + name + "}"


def escape(value: str) -> str:
    """A literal value as Compose must see it: `$` doubled so it is not interpolated."""
    return value.replace("$", "$$")
