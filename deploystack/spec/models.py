"""The spec: pydantic models of deploystack.yaml.

Every model forbids unknown keys; defaults make a short spec valid. Cross-field rules that span
several apps (overlapping routes) live in `Stack`'s validator so that every problem is reported at once.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Compose v2 accepts lowercase letters, digits, dashes and underscores, starting with a letter or digit.
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# App names become service names and DNS names on the private network.
APP_NAME = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$|^[a-z]$")
SIZE = re.compile(r"^[0-9]+[kmg]?$")

# Service names that deploystack itself uses; an app may not take one.
RESERVED_NAMES = frozenset(
    {"lbc", "db-primary", "redis", "memcached", "rabbitmq", "elasticsearch", "media", "cdc"}
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toggle(Model):
    """A role part that is on or off; `redis: true` is short for `redis: {enabled: true}`."""

    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {"enabled": value}
        return value


class Ports(Model):
    http: int = Field(80, ge=1, le=65535)
    https: int = Field(443, ge=1, le=65535)


class Fail2ban(Toggle):
    maxretry: int = Field(5, ge=1)
    findtime: str = "10m"
    bantime: str = "1h"
    ignoreip: list[str] = Field(default_factory=list)


class LBC(Model):
    bind: str = "127.0.0.1"
    ports: Ports = Field(default_factory=Ports)
    tls: Literal["self-signed", "files", "acme"] = "self-signed"
    client_max_body_size: str = Field("10m", pattern=SIZE.pattern)
    proxy_read_timeout: int = Field(30, ge=1, description="seconds")
    fail2ban: Fail2ban = Field(default_factory=Fail2ban)


class App(Model):
    source: str = Field(description="path of the Django project, relative to the spec file")
    wsgi: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:callable")
    settings: str | None = Field(None, description="settings module; default: <package of wsgi>.settings")
    server: Literal["gunicorn", "uwsgi"] = "gunicorn"
    workers: int = Field(2, ge=1, le=64)
    replicas: int = Field(1, ge=1, le=64)
    routes: list[str] = Field(default_factory=list)
    migrate: bool = Field(True, description="run migrations when the app starts")
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("routes")
    @classmethod
    def _routes_are_prefixes(cls, routes: list[str]) -> list[str]:
        for route in routes:
            if not (route.startswith("/") and route.endswith("/")) or " " in route:
                raise ValueError(f"route {route!r} must start and end with '/'")
        if len(set(routes)) != len(routes):
            raise ValueError("a route is listed twice")
        return routes

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return env

    @property
    def settings_module(self) -> str:
        return self.settings or self.wsgi.split(":")[0].rsplit(".", 1)[0] + ".settings"


class APC(Model):
    apps: dict[str, App] = Field(min_length=1)

    @field_validator("apps")
    @classmethod
    def _app_names(cls, apps: dict[str, App]) -> dict[str, App]:
        for name in apps:
            if not APP_NAME.match(name):
                raise ValueError(f"app name {name!r} must be lowercase letters, digits and '-'")
            if name in RESERVED_NAMES or name.startswith("db-replica-") or name.endswith("-worker"):
                raise ValueError(f"app name {name!r} is taken by deploystack")
        return apps


class Redis(Toggle):
    maxmemory: str = Field("256mb", pattern=r"^[0-9]+(kb|mb|gb)$")
    appendonly: bool = False


class Memcached(Toggle):
    memory_mb: int = Field(64, ge=16)


class RabbitMQ(Toggle):
    vhost: str = "app"
    user: str = "app"


class Elasticsearch(Toggle):
    enabled: bool = False
    image: str = "docker.elastic.co/elasticsearch/elasticsearch:8.15.0"


class ACC(Model):
    redis: Redis = Field(default_factory=Redis)
    memcached: Memcached = Field(default_factory=Memcached)
    rabbitmq: RabbitMQ = Field(default_factory=RabbitMQ)
    elasticsearch: Elasticsearch = Field(default_factory=Elasticsearch)


class MMC(Toggle):
    backend: Literal["seaweedfs", "minio"] = "seaweedfs"
    buckets: list[str] = Field(default_factory=lambda: ["media"], min_length=1)
    minio_image: str = "minio/minio:latest"

    @field_validator("buckets")
    @classmethod
    def _bucket_names(cls, buckets: list[str]) -> list[str]:
        for bucket in buckets:
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"bucket name {bucket!r} is not a valid S3 bucket name")
        return buckets


class DBC(Model):
    replicas: int = Field(1, ge=0, le=16)
    database: str = Field("app", pattern=r"^[a-z_][a-z0-9_]*$")
    user: str = Field("app", pattern=r"^[a-z_][a-z0-9_]*$")
    max_connections: int = Field(100, ge=10)
    shared_buffers: str = "128MB"


class CDC(Toggle):
    enabled: bool = False
    branch: str = "master"
    provider: Literal["github", "gitlab", "gitea"] = "github"


class Stack(Model):
    """The whole spec: one project, six roles."""

    project: str = Field(description="Compose project name")
    domain: str = "localhost"
    lbc: LBC = Field(default_factory=LBC)
    apc: APC
    acc: ACC = Field(default_factory=ACC)
    mmc: MMC = Field(default_factory=MMC)
    dbc: DBC = Field(default_factory=DBC)
    cdc: CDC = Field(default_factory=CDC)

    @field_validator("project")
    @classmethod
    def _project_name(cls, name: str) -> str:
        if not PROJECT_NAME.match(name):
            raise ValueError(
                "must be lowercase letters, digits, '-' and '_', starting with a letter or digit "
                "(Compose's rule for project names)"
            )
        return name
