"""ProjectPlan: the whole stack as plain data, computed from a Stack with no I/O.

Both the compose.yaml writer and the Docker engine read a ProjectPlan, so what `docker compose up`
would run and what `deploystack up` runs come from one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from deploystack.plan.names import Role, container_name


@dataclass(frozen=True)
class AppImage:
    """What an app's image is made of besides its source, from the spec (render reads the source)."""

    base: str  # the base image of the app's Debian release (its Python)
    server_packages: tuple[str, ...]  # pip requirements of the app server
    build_packages: tuple[str, ...] = ()  # Debian packages where wheels are built
    runtime_packages: tuple[str, ...] = ()  # Debian packages in the image the app runs in
    dependencies: str | None = None  # the file the spec names; else render finds one in the source
    assets_command: str | None = None
    assets_output: str | None = None  # set when the app has an asset build
    dockerfile: str | None = None  # the app's own Dockerfile, relative to its source


@dataclass(frozen=True)
class Build:
    """How to make a service's image: a copy of compose/<role>/ (plus an app's source) built as `repo`."""

    role: str  # folder under compose/
    repo: str  # image name without tag; the tag is the build context's content hash
    context: str  # the build context's folder inside the output directory
    args: tuple[tuple[str, str], ...] = ()
    app_source: PurePosixPath | None = None  # relative to the spec's folder, copied in as app/
    app: str | None = None  # the app whose image this is (deploys and rollbacks are per app)
    from_git: bool = False  # the app's git checkout (see gitsource), not app_source, is copied in
    with_package: bool = False  # copy deploystack itself in as deploystack-src/ (CDC runs it)
    app_image: AppImage | None = None  # apps only

    @property
    def dockerfile(self) -> str | None:
        """The Dockerfile inside the context when it is not the context's own `Dockerfile`."""
        return self.app_image.dockerfile if self.app_image is not None else None

    @property
    def stages(self) -> tuple[str, ...]:
        """Named stages tagged after each build, so that the classic builder keeps their layers as the
        next build's cache: an app's dependency layer must survive a code-only change."""
        if self.app_image is None or self.app_image.dockerfile is not None:
            return ()
        return ("builder", "assets") if self.app_image.assets_output is not None else ("builder",)


@dataclass(frozen=True)
class Mount:
    source: str  # a volume name, or a path relative to the output directory for binds
    target: str
    bind: bool = False
    read_only: bool = False


@dataclass(frozen=True)
class Port:
    host_ip: str
    host_port: int
    container_port: int


@dataclass(frozen=True)
class HealthCheck:
    test: tuple[str, ...]  # exec form, without Compose's leading "CMD"
    interval_s: int = 5
    timeout_s: int = 5
    retries: int = 5
    start_period_s: int = 60


@dataclass(frozen=True)
class Tmpfs:
    """A tmpfs mount: what a read-only container may still write (emptied at every start)."""

    target: str
    size: str  # upper bound, as Docker's tmpfs takes it (16m)
    # Octal, e.g. 1777 for /tmp. runc keeps the mode of a folder the image already has there (not its
    # owner): an entrypoint hands such a folder to its user itself.
    mode: str
    owner: int | None = None  # uid (and gid) owning it, for an image whose USER is not root

    @property
    def size_bytes(self) -> int:
        units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
        return int(self.size[:-1]) * units[self.size[-1]] if self.size[-1] in units else int(self.size)

    @property
    def options(self) -> str:
        owner = f",uid={self.owner},gid={self.owner}" if self.owner is not None else ""
        return f"size={self.size},mode={self.mode}{owner}"


@dataclass(frozen=True)
class LogRotation:
    """Docker's json-file log driver, rotated: at most max_file files of max_size each per container."""

    max_size: str
    max_file: int

    @property
    def options(self) -> dict[str, str]:
        return {"max-size": self.max_size, "max-file": str(self.max_file)}


# Every container runs with these unless its role says otherwise (plan/hardening.py).
NO_NEW_PRIVILEGES = "no-new-privileges:true"


@dataclass(frozen=True)
class Service:
    name: str
    role: Role
    build: Build | None
    image: str | None = None  # for registry-only images (Elasticsearch, MinIO); else from build
    replicas: int = 1
    environment: tuple[tuple[str, str], ...] = ()  # values may hold ${SECRET} references
    networks: tuple[str, ...] = ("private",)
    aliases: tuple[str, ...] = ()
    ports: tuple[Port, ...] = ()
    mounts: tuple[Mount, ...] = ()
    healthcheck: HealthCheck | None = None
    depends_on: tuple[str, ...] = ()
    command: tuple[str, ...] | None = None
    one_shot: bool = False  # runs to completion (migrations); dependents wait for exit code 0
    # Hardening (plan/hardening.py): every capability dropped, only these added back; no privilege gained
    # through setuid binaries; a read-only root file system with tmpfs where the role allows.
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = (NO_NEW_PRIVILEGES,)
    read_only: bool = False
    tmpfs: tuple[Tmpfs, ...] = ()
    mem_limit: str | None = None  # container memory limit, as Compose writes it (512m)
    pids_limit: int | None = None
    logging: LogRotation | None = None  # every service's, from the spec's `logging` (project.py)
    config_dir: str | None = None  # folder of rendered files mounted at /etc/deploystack
    reload: tuple[str, ...] | None = None  # command that applies a config change without a restart
    stop_grace_s: int = 20

    @property
    def scalable(self) -> bool:
        """Replicated services (apps and their workers) get numbered containers, no fixed container name."""
        return self.role in (Role.APC, Role.APC_WORKER)

    @property
    def upstream(self) -> bool:
        """The LBC lists this service's replicas: adding or removing one means reloading the LBC."""
        return self.role == Role.APC


@dataclass(frozen=True)
class Network:
    name: str
    internal: bool


@dataclass(frozen=True)
class ConfigFile:
    """A config file rendered from compose/<template> with `context` to <path> in the output (or, with
    `yaml`, the context dumped as YAML)."""

    path: str
    template: str
    context: dict[str, object] = field(hash=False)
    yaml: bool = False  # the context itself, dumped as YAML (no template: YAML is never templated)


@dataclass(frozen=True)
class AppDatabase:
    """An app's PostgreSQL login role and the database it uses (plan/tenancy.py)."""

    app: str
    role: str  # NOSUPERUSER, NOCREATEROLE; owner of `database` unless it shares another app's
    database: str
    password_secret: str  # the .env name of the role's password
    owner: str  # the role that owns `database`: `role`, or the shared app's role (grants, not ownership)


@dataclass(frozen=True)
class Tenancy:
    """What `up` provisions on the database primary once it is ready (engine/provision.py)."""

    databases: tuple[AppDatabase, ...]
    # The pre-tenancy layout (one superuser role owning one shared database): migrated from, then demoted.
    legacy_user: str
    legacy_database: str
    # (role, .env name of its password): LOGIN REPLICATION roles made with the apps' (dbc.offsite on Patroni,
    # where no entrypoint of ours makes roles)
    replication_roles: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ProjectPlan:
    project: str
    services: tuple[Service, ...]
    networks: tuple[Network, ...]
    volumes: tuple[str, ...]
    configs: tuple[ConfigFile, ...] = ()
    secrets: tuple[str, ...] = ()  # names of the generated secrets kept in .env
    # .env names of app variables from the host environment or env files (plan/secrets.app_secret)
    app_secrets: tuple[str, ...] = ()
    tenancy: Tenancy | None = None  # None: no database in the plan

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def container_name(self, service: Service, number: int = 1) -> str:
        """Compose v2's container name for replica `number` of `service`."""
        return container_name(self.project, service.name, number)
