"""A deploystack stack for a test run, testcontainers-style.

    with StackUnderTest("deploystack.yaml") as stack:
        assert requests.get(stack.url("/api/health/"), verify=False).ok

Each instance runs under its own project name (the spec's, plus a random suffix) with its LBC on free
ports of 127.0.0.1, so parallel runs never collide. It works on a derived copy of the spec in a temporary
folder (project, ports and absolute app sources changed, comments kept), so the CLI can be pointed at it
too (`stack.spec`). Everything it made (containers, networks, volumes, the folder) goes at `stop()`, also
when starting failed, and the error then carries the failing service's logs.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ruamel.yaml import YAML

from deploystack.engine.report import Reporter
from deploystack.errors import UsageError
from deploystack.gitsource import resolve_url
from deploystack.operations import Session, Target
from deploystack.operations import stack as stack_ops
from deploystack.operations import swarm as swarm_ops
from deploystack.operations.db import app_database
from deploystack.plan.names import PRIMARY, replica_names, replica_of_alias
from deploystack.render.envfile import read_env
from deploystack.render.project import ENV_FILE
from deploystack.spec import Stack, load_stack

log = logging.getLogger("deploystack.testing")


class LogReporter(Reporter):
    def step(self, text: str) -> None:
        log.info(text)

    def detail(self, text: str) -> None:
        log.debug(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def derive_spec(spec: Path, folder: Path, project: str, http: int, https: int) -> Path:
    """A copy of `spec` in `folder` with another project name, loopback ports and absolute paths: app
    sources (folders, and git repositories given as local paths), env files and `tls: files`."""
    yaml = YAML(typ="rt")
    data = yaml.load(spec.read_text(encoding="utf-8"))
    data["project"] = project
    lbc = data.setdefault("lbc", {})
    lbc["bind"] = "127.0.0.1"
    lbc["ports"] = {"http": http, "https": https}

    def absolute(paths: str | list[str]) -> str | list[str]:
        if isinstance(paths, str):
            return str((spec.resolve().parent / paths).resolve())
        return [str((spec.resolve().parent / path).resolve()) for path in paths]

    for key in ("cert_file", "key_file"):
        if key in lbc:
            lbc[key] = absolute(lbc[key])
    if "env_file" in data["apc"]:
        data["apc"]["env_file"] = absolute(data["apc"]["env_file"])
    for app in data["apc"]["apps"].values():
        if "env_file" in app:
            app["env_file"] = absolute(app["env_file"])
        if "source" in app:
            app["source"] = str((spec.resolve().parent / app["source"]).resolve())
        if "git" in app:
            app["git"]["url"] = resolve_url(app["git"]["url"], spec.resolve().parent)
    derived = folder / "deploystack.yaml"
    with derived.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)
    return derived


class StackUnderTest:
    """`engine="swarm"`: deployed with `docker stack deploy` on the swarm this engine manages (whole
    stacks only: `services` is for the Compose engine). `project`: a fixed name instead of a random one.
    `output`: the output folder, as `up -o` takes it (default: stack/ beside the derived spec); one that
    did not exist yet is removed at stop()."""

    def __init__(self, spec: str | Path, services: Sequence[str] | None = None, keep: bool = False,
                 engine: str = "compose", project: str | None = None, output: Path | None = None) -> None:
        if engine not in ("compose", "swarm"):
            raise UsageError(f"engine {engine!r}: expected 'compose' or 'swarm'")
        if engine == "swarm" and services:
            raise UsageError("a swarm stack is deployed whole: services= works with the compose engine")
        self.source_spec = Path(spec)
        self.services = list(services) if services else None
        self.keep = keep
        self.engine = engine
        self.report = LogReporter()
        original = load_stack(self.source_spec)  # a bad spec fails here, before anything is made
        self.project = project or f"{original.project}-{secrets.token_hex(3)}"
        self.own_images = project is None  # a throwaway name's images go at stop(); a chosen name's stay
        self.http_port, self.https_port = free_port(), free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=f"deploystack-{self.project}-"))
        self.spec = derive_spec(self.source_spec, self.folder, self.project, self.http_port, self.https_port)
        self.target = Target.of(self.spec, output)
        self.own_output = output is None or not output.exists()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> StackUnderTest:
        """Build what is missing and bring the stack (or `services` and what they need) up, healthy."""
        try:
            if self.engine == "swarm":
                swarm_ops.up_swarm(Session(self.target, self.report))
            else:
                stack_ops.up(Session(self.target, self.report), services=self.services)
        except BaseException:
            self.stop(force=True)
            raise
        return self

    def stop(self, force: bool = False) -> None:
        """Remove containers, networks, volumes and the folder (unless keep, and not forced)."""
        if self.keep and not force:
            log.warning("keeping stack %s (spec %s): deploystack down --volumes -f %s",
                        self.project, self.spec, self.spec)
            return
        stack_ops.down(Session(self.target, self.report), volumes=True, swarm=self.engine == "swarm")
        if self.own_images:
            stack_ops.remove_project_images(self.project, self.report)
        if self.own_output:
            shutil.rmtree(self.target.output, ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> StackUnderTest:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what tests use -----------------------------------------------------------------------------

    @property
    def stack(self) -> Stack:
        return load_stack(self.spec)

    def url(self, path: str = "/") -> str:
        """The LBC's HTTPS address for `path` (its certificate is self-signed: verify=False)."""
        return f"https://127.0.0.1:{self.https_port}{path}"

    def http_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def db_url(self, alias: str = "default", app: str | None = None) -> str:
        """A PostgreSQL URL for `default` (the primary) or `replica_N`, reachable from this host, as app
        `app`'s role on its database (default: the spec's first app).

        The database is on the private network only; the host reaches a container's bridge address
        directly (no forwarding), which is all a test on the same machine needs.
        """
        from deploystack.engine import testing as engine_testing

        stack = self.stack
        if stack.dbc.offsite is not None:  # its pg_hba names the stack's containers, not the host's bridge
            raise UsageError("db_url(): with dbc.offsite declared, the database admits the app role only from "
                             "the stack's own containers; use exec('db-primary', ['psql', ...]) instead")
        service = PRIMARY if alias == "default" else replica_of_alias(alias)
        if service != PRIMARY and service not in replica_names(stack.dbc.replicas):
            raise UsageError(f"no database alias {alias!r}: default or replica_1..replica_{stack.dbc.replicas}")
        address = engine_testing.private_address(self.project, service)
        database = app_database(stack, app)
        password = read_env(self.target.output / ENV_FILE)[database.password_secret]
        return f"postgresql://{database.role}:{password}@{address}:5432/{database.database}"

    def exec(self, service: str, command: Sequence[str], number: int = 1) -> tuple[int, str]:
        """Run `command` in replica `number` of `service`: (exit code, output)."""
        from deploystack.engine import testing as engine_testing

        return engine_testing.exec_in(self.project, service, number, list(command))

    def scale(self, app: str, replicas: int) -> None:
        stack_ops.scale(Session(self.target, self.report), [f"{app}={replicas}"])
