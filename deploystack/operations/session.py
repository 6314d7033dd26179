"""One command's state, each piece loaded once, as copier's Worker holds a copy's: the spec's `Stack`, the
rendered project, the engine client (connected lazily) and the project lock.

Every command of deploystack.operations takes a `Session`; the CLI makes one per command. What a
command reads twice comes from here the second time: `up --engine swarm` or `db promote` parse the spec
once. A render that must see the output as it is now (a deploy renders before and after moving the
source) calls `render()`, which renders again but takes the same `stack`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from deploystack.engine.report import Reporter, Silent
from deploystack.errors import UsageError
from deploystack.operations.lock import project_lock
from deploystack.operations.output import write_rendered
from deploystack.plan.names import DB_ROUTER, NODE_PREFIX
from deploystack.render.project import ENV_FILE, Rendered, check_output_project, read_ca_bundle, render_project
from deploystack.render.state import read_output_state
from deploystack.spec import Stack, load_stack
from deploystack.target import Target

if TYPE_CHECKING:
    from deploystack.engine.apply import Outcome
    from deploystack.engine.client import DockerClient


@dataclass
class Session:
    """The spec file and output folder a command works on, and what it has loaded of them."""

    target: Target
    report: Reporter = field(default_factory=Silent)
    ca_bundle: Path | None = None  # the CA bundle for builds (--ca-bundle); None: the host's

    @property
    def spec(self) -> Path:
        return self.target.spec

    @property
    def output(self) -> Path:
        return self.target.output

    @cached_property
    def stack(self) -> Stack:
        """The spec, parsed and validated once."""
        return load_stack(self.target.spec)

    @cached_property
    def client(self) -> DockerClient:
        """The engine, connected (and pinged) at the first use."""
        from deploystack.engine import client

        return client.connect()

    def connect(self) -> DockerClient:
        """The engine client, connected now if not yet (commands connect before they take the lock)."""
        return self.client

    @cached_property
    def rendered(self) -> Rendered:
        """The project as the spec has it, rendered once (see `render` for a fresh one)."""
        return self.render()

    def render(self, stack: Stack | None = None, fetch: bool = True) -> Rendered:
        """The project in memory, rendered now from the output as it is (`stack`: another spec than the
        session's, e.g. the stack as it ran before `db upgrade`). `fetch`: a git app with no checkout
        yet gets its branch's head first."""
        stack = stack or self.stack
        check_output_project(self.output, stack.project)  # before fetching into it
        if fetch:
            fetch_new_git_sources(stack, self.target)
        return render_project(stack, self.spec, self.output, read_ca_bundle(self.ca_bundle),
                              state=read_output_state(self.output, stack))

    def generated(self, report: Reporter | None = None) -> Rendered:
        """`rendered`, written to the output first where it differs (generate if stale); the caller holds
        the lock."""
        write_rendered(self.rendered, report)
        return self.rendered

    def lock(self, wait_s: float = 0, report: Reporter | None = None) -> AbstractContextManager[None]:
        """The project lock of the output folder (`wait_s`: queue behind another run that long)."""
        return project_lock(self.output, wait_s, report)

    def require_generated(self) -> None:
        """Commands that change a running stack refuse an output folder that holds no generated stack, or
        another project's: with a mistyped -o they would otherwise generate one, with fresh secrets that
        match nothing running."""
        check_output_project(self.output, self.stack.project)
        if not (self.output / ENV_FILE).is_file():
            raise UsageError(f"{self.output}: no stack was generated here (no {ENV_FILE}); pass the -o that up "
                             "was given, or run deploystack up first")

    def stack_with(self, enabled: Callable[[Stack], bool], needs: str, otherwise: str) -> Stack:
        """The spec's stack when `enabled` says it has the feature a command needs; else a UsageError."""
        if not enabled(self.stack):
            raise UsageError(f"{needs} in {self.spec}; {otherwise}")
        return self.stack

    def refuse_pending_upgrade(self, project: str, patroni: bool) -> None:
        """`ha: patroni` on a stack whose data is still on its PostgreSQL 15 volume: never an empty cluster
        beside it; `db upgrade` moves the data."""
        from deploystack.engine import upgrade
        from deploystack.plan.upgrade import pending_message

        if patroni and upgrade.pending(self.client, project):
            raise UsageError(pending_message(project))

    def converge(self, rendered: Rendered, partial: bool = False) -> Outcome:
        """Build what is missing and converge the engine on `rendered`. `partial`: the plan is a subset;
        services outside it are left as they are."""
        from deploystack.engine import apply, db, images
        from deploystack.plan.dbc import wanted_slots

        services = {s.name for s in rendered.plan.services}
        if not partial:  # scale, deploy: the same refusal as up's
            self.refuse_pending_upgrade(rendered.plan.project, DB_ROUTER in services)
        images.require_registry_images(self.client, rendered, self.report)
        images.ensure_base_images(self.client, rendered, self.report)
        images.build_images(self.client, rendered, self.report)
        outcome = apply.Converger(self.client, rendered, self.report).up(partial=partial)
        if "db-primary" in services:  # not a subset without the database
            replicas, slots = wanted_slots(rendered.plan)
            db.drop_stale_slots(self.client, rendered.plan.project, slots, self.report)
            db.remove_stale_replica_volumes(self.client, rendered.plan.project, replicas, self.report)
        if DB_ROUTER in services:  # dbc.ha: patroni, whole plan
            nodes = [s.name for s in rendered.plan.services if s.name.startswith(NODE_PREFIX)]
            db.remove_stale_replica_volumes(self.client, rendered.plan.project, nodes, self.report,
                                            prefix=NODE_PREFIX)
        return outcome


def fetch_new_git_sources(stack: Stack, target: Target) -> None:
    """An app from git that has no checkout yet gets its branch's head; later, only `deploy` moves it."""
    from deploystack import gitsource

    for name, app in stack.apc.apps.items():
        if app.git is not None and gitsource.head(target.output, name) is None:
            gitsource.fetch(name, app.git, target.spec.resolve().parent, target.output, None)
