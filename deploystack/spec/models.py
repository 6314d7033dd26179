"""The spec: pydantic models of deploystack.yaml.

Every model forbids unknown keys; defaults make a short spec valid. Cross-field rules that span
several apps (overlapping routes) live in `Stack`'s validator so that every problem is reported at once.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Compose v2 accepts lowercase letters, digits, dashes and underscores, starting with a letter or digit.
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# App names become service names and DNS names on the private network.
APP_NAME = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$|^[a-z]$")
SIZE = re.compile(r"^[0-9]+[kmg]?$")
MEMORY = r"^[0-9]+[kmg]$"  # a container memory limit as Compose writes it: 512m, 1g
UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _docker_memory(value: str) -> str:
    if int(value[:-1]) * UNITS[value[-1]] < 6 << 20:
        raise ValueError(f"{value!r} is below Docker's smallest memory limit (6m)")
    return value


# A container's memory limit: the pattern first, then Docker's lower bound.
MemoryLimit = Annotated[str, Field(pattern=MEMORY), AfterValidator(_docker_memory)]

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


# fail2ban's own duration syntax, kept to one number and one unit so nothing else reaches jail.local.
DURATION = r"^[0-9]+[smhdw]?$"
# A URL path of the admin login page: printed into a fail2ban regex, so only plain path characters.
URL_PATH = r"^/[A-Za-z0-9._~/-]*$"
# tls: files: the file names are printed into nginx.conf (their folders only into compose.yaml).
TLS_FILE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


class Fail2ban(Toggle):
    maxretry: int = Field(5, ge=1, description="matching requests within findtime that ban a client")
    findtime: str = Field("10m", pattern=DURATION, description="e.g. 600, 10m, 1h")
    bantime: str = Field("1h", pattern=DURATION, description="e.g. 3600, 1h, 1d")
    ignoreip: list[str] = Field(default_factory=list, description="addresses or networks never banned")
    admin_login: str = Field("/admin/login/", pattern=URL_PATH,
                             description="the Django admin login path watched for brute force")

    @field_validator("ignoreip")
    @classmethod
    def _addresses(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                example = "e.g. 203.0.113.7 or 10.0.0.0/8"
                raise ValueError(f"{entry!r} is not an IP address or network ({example})") from None
        return entries


class LBC(Model):
    bind: str = "127.0.0.1"
    ports: Ports = Field(default_factory=Ports)
    tls: Literal["self-signed", "files", "acme"] = "self-signed"
    # Validated with the tls mode that comes before them (validate_default: also when left out).
    cert_file: str | None = Field(None, validate_default=True,
                                  description="tls: files: the certificate chain (PEM), relative to the spec")
    key_file: str | None = Field(None, validate_default=True,
                                 description="tls: files: its private key (PEM), relative to the spec")
    acme_email: str | None = Field(None, validate_default=True,
                                   description="tls: acme: the account e-mail for expiry notices")
    acme_staging: bool = Field(False, description="tls: acme: use Let's Encrypt's staging CA (for trying out)")
    client_max_body_size: str = Field("10m", pattern=SIZE.pattern)
    connect_timeout_ms: int = Field(250, ge=10, le=60_000,
                                    description="connect timeout to a replica; a dead one costs at most this")
    proxy_read_timeout: int = Field(30, ge=1, description="seconds")
    fail2ban: Fail2ban = Field(default_factory=Fail2ban)
    memory: MemoryLimit = Field("256m", description="container memory limit")

    @field_validator("cert_file", "key_file")
    @classmethod
    def _tls_files(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "tls" not in info.data:  # tls itself is wrong: that is the one problem to report
            return value
        tls = info.data["tls"]
        if tls == "files" and not value:
            raise ValueError("required when tls is 'files' (a path relative to the spec file)")
        if tls != "files" and value:
            raise ValueError(f"only used when tls is 'files' (tls is {tls!r})")
        if value is None:
            return value
        path = PurePosixPath(value)
        if not TLS_FILE_NAME.match(path.name):
            raise ValueError(f"{value!r} must end in a file name of letters, digits, '.', '_', '+' or '-'")
        # The LBC mounts the file's folder: the spec's own folder (or /) would expose stack/.env to it.
        if str(path.parent) in {".", "/"}:
            raise ValueError(f"{value!r}: keep the certificate and key in a folder of their own, e.g. tls/"
                             f"{path.name} (the LBC mounts that folder read-only)")
        return value

    @field_validator("acme_email")
    @classmethod
    def _acme_email(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "tls" not in info.data:
            return value
        tls = info.data["tls"]
        if tls == "acme" and not value:
            raise ValueError("required when tls is 'acme' (Let's Encrypt sends expiry notices there)")
        if tls != "acme" and value:
            raise ValueError(f"only used when tls is 'acme' (tls is {tls!r})")
        if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value


class Worker(Model):
    """Celery workers of an app: the app's image running `celery -A <app> worker` (service <app>-worker)."""

    app: str | None = Field(None, description="module for `celery -A`; default: the package of wsgi")
    concurrency: int = Field(2, ge=1, le=64)
    queues: list[str] = Field(default_factory=lambda: ["celery"], min_length=1)
    beat: bool = Field(False, description="also run celery beat in the first worker (one scheduler only)")
    replicas: int = Field(1, ge=1, le=64)
    memory: MemoryLimit = Field("512m", description="container memory limit of each worker")

    @model_validator(mode="after")
    def _one_scheduler(self) -> Worker:
        if self.beat and self.replicas > 1:
            raise ValueError("beat runs in every worker replica: with beat, keep replicas at 1 "
                             "(or give beat an app of its own)")
        return self

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, queues: list[str]) -> list[str]:
        for queue in queues:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", queue):
                raise ValueError(f"queue name {queue!r} must be letters, digits, '_', '.' or '-'")
        return queues


# A branch name as git allows it, kept to characters that need no quoting anywhere they are printed.
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]+(?<![./])$")


def branch_name(name: str) -> str:
    if not BRANCH.match(name):
        raise ValueError(f"{name!r} is not a branch name (letters, digits, '.', '_', '/' and '-')")
    return name


class GitSource(Model):
    """Where `deploystack deploy` fetches an app from: a URL git understands, or a local repository."""

    url: str = Field(min_length=1, description="https://, ssh://, file:// or a path (relative to the spec file)")
    branch: str = Field("master", description="deployed when no --ref is given")

    _branch = field_validator("branch")(branch_name)

    @field_validator("url")
    @classmethod
    def _no_options(cls, url: str) -> str:
        if url.startswith("-") or any(c.isspace() for c in url):
            raise ValueError(f"{url!r} is not a repository URL or path")
        return url


class App(Model):
    source: str | None = Field(None, description="path of the Django project, relative to the spec file")
    git: GitSource | None = Field(None, description="deploy from this repository instead of `source`")
    wsgi: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:callable")
    settings: str | None = Field(None, description="settings module; default: <package of wsgi>.settings")
    server: Literal["gunicorn", "uwsgi"] = "gunicorn"
    workers: int = Field(2, ge=1, le=64)
    replicas: int = Field(1, ge=1, le=64)
    routes: list[str] = Field(default_factory=list)
    migrate: bool = Field(True, description="run migrations when the app starts")
    worker: Worker | None = Field(None, description="Celery workers from the same image")
    env: dict[str, str] = Field(default_factory=dict)
    memory: MemoryLimit = Field("512m", description="container memory limit of each replica (and of its "
                                                    "migration job)")

    @model_validator(mode="after")
    def _one_source(self) -> App:
        if self.source is None and self.git is None:
            raise ValueError("give the app's `source` (a folder) or its `git` repository")
        if self.source is not None and self.git is not None:
            raise ValueError("give `source` or `git`, not both: deploys from git ignore a local folder")
        return self

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
    def package(self) -> str:
        """The Django project's package: `backend` for `backend.wsgi:application`."""
        return self.wsgi.split(":")[0].rsplit(".", 1)[0]

    @property
    def settings_module(self) -> str:
        return self.settings or self.package + ".settings"


class APC(Model):
    apps: dict[str, App] = Field(min_length=1)

    @field_validator("apps")
    @classmethod
    def _app_names(cls, apps: dict[str, App]) -> dict[str, App]:
        for name in apps:
            if not APP_NAME.match(name):
                raise ValueError(f"app name {name!r} must be lowercase letters, digits and '-'")
            if name in RESERVED_NAMES or name.startswith("db-replica-") or name.endswith(("-worker", "-migrate")):
                raise ValueError(f"app name {name!r} is taken by deploystack")
        return apps


class Redis(Toggle):
    maxmemory: str = Field("256mb", pattern=r"^[0-9]+(kb|mb|gb)$", description="Redis's own data limit")
    appendonly: bool | None = Field(None, description="AOF persistence; default: on when Redis is the broker")
    memory: MemoryLimit = Field("384m", description="container memory limit")


class Memcached(Toggle):
    memory_mb: int = Field(64, ge=16, description="cache size")
    memory: MemoryLimit = Field("128m", description="container memory limit")


class RabbitMQ(Toggle):
    vhost: str = "app"
    user: str = "app"
    management: bool = Field(False, description="the management plugin (HTTP API on 15672, private network)")
    memory: MemoryLimit = Field("512m", description="container memory limit")


class Elasticsearch(Toggle):
    enabled: bool = False
    image: str = "docker.elastic.co/elasticsearch/elasticsearch:8.15.0"
    memory: MemoryLimit = Field("1g", description="container memory limit")


class ACC(Model):
    redis: Redis = Field(default_factory=Redis)
    memcached: Memcached = Field(default_factory=Memcached)
    rabbitmq: RabbitMQ = Field(default_factory=RabbitMQ)
    elasticsearch: Elasticsearch = Field(default_factory=Elasticsearch)
    cache: Literal["redis", "memcached"] | None = Field(
        None, description="Django's default cache; default: redis when on, else memcached")

    @model_validator(mode="after")
    def _cache_is_on(self) -> ACC:
        if self.cache is not None and not getattr(self, self.cache).enabled:
            raise ValueError(f"cache is {self.cache!r}, but acc.{self.cache} is not enabled")
        return self

    @property
    def django_cache(self) -> str | None:
        if self.cache:
            return self.cache
        return "redis" if self.redis.enabled else "memcached" if self.memcached.enabled else None

    @property
    def redis_is_broker(self) -> bool:
        return self.redis.enabled and not self.rabbitmq.enabled


class MMC(Toggle):
    backend: Literal["seaweedfs", "minio"] = "seaweedfs"
    buckets: list[str] = Field(default_factory=lambda: ["media"], min_length=1,
                               description="the first one holds Django's media and is served at /media/")
    minio_image: str = "minio/minio:latest"
    memory: MemoryLimit = Field("512m", description="container memory limit")

    @field_validator("buckets")
    @classmethod
    def _bucket_names(cls, buckets: list[str]) -> list[str]:
        for bucket in buckets:
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"bucket name {bucket!r} is not a valid S3 bucket name")
        return buckets


# A DNS name (labels of letters, digits and '-') or an IP address: what the other host dials.
HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class Offsite(Model):
    """A replica on another host: the primary publishes its port for it, over TLS, with its own role."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,30}$",
                      description="names its role and replication slot on the primary: offsite_<name>")
    host: str = Field(description="the DNS name or address the other host uses to reach this one "
                                  "(written into the primary's certificate)")
    bind: str = Field(description="the address of this host the primary's port is published on")
    port: int = Field(5432, ge=1, le=65535, description="the published port on `bind`")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not HOST_NAME.match(value) and not _is_ip(value):
            raise ValueError(f"{value!r} is not a DNS name or an IP address")
        return value

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        if not _is_ip(value):
            raise ValueError(f"{value!r} is not an IP address of this host")
        if ipaddress.ip_address(value).is_unspecified:
            raise ValueError(f"{value!r} would publish the database on every interface: "
                             "name the one address the other host reaches")
        return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class DBC(Model):
    replicas: int = Field(1, ge=0, le=16)
    database: str = Field("app", pattern=r"^[a-z_][a-z0-9_]*$")
    user: str = Field("app", pattern=r"^[a-z_][a-z0-9_]*$")
    max_connections: int = Field(100, ge=10)
    shared_buffers: str = "128MB"
    memory: MemoryLimit = Field("1g", description="container memory limit of the primary and of each replica")
    offsite: Offsite | None = Field(None, description="a disaster-recovery replica on another host "
                                                      "(`deploystack export replica` writes what it runs)")


class CDC(Toggle):
    enabled: bool = False
    branch: str = "master"
    _branch = field_validator("branch")(branch_name)
    provider: Literal["github", "gitlab", "gitea"] = "github"
    memory: MemoryLimit = Field("512m", description="container memory limit (deploys run in it)")


# A registry host (with an optional port) and path, as `docker push` takes it: registry.example.com:5000/team
REGISTRY = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$"


class Swarm(Model):
    """How the stack runs on Docker Swarm (`--engine swarm`); the Compose engine ignores it."""

    endpoint_mode: Literal["dnsrr", "vip"] = Field(
        "dnsrr", description="dnsrr: service names resolve to the tasks' addresses (works without IPVS); "
                             "vip: one virtual address per service, balanced by the kernel's IPVS")
    registry: str | None = Field(None, pattern=REGISTRY,
                                 description="images are pushed to and pulled from here; none: already on the nodes")
    update_delay: int = Field(10, ge=3, le=600,
                              description="seconds between replaced tasks of a rolling update (longer than "
                                          "the LBC's DNS cache, so it always knows a live replica)")


class Logging(Model):
    """Docker's json-file logs of every container, rotated so that a chatty one cannot fill the disk."""

    max_size: str = Field("10m", pattern=MEMORY, description="size of one log file before it rotates, e.g. 10m")
    max_file: int = Field(3, ge=1, le=100, description="log files kept per container (the newest included)")


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
    swarm: Swarm = Field(default_factory=Swarm)
    logging: Logging = Field(default_factory=Logging)

    @field_validator("project")
    @classmethod
    def _project_name(cls, name: str) -> str:
        if not PROJECT_NAME.match(name):
            raise ValueError(
                "must be lowercase letters, digits, '-' and '_', starting with a letter or digit "
                "(Compose's rule for project names)"
            )
        return name
