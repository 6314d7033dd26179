"""`deploy`, `rollback` and `history`: an app's new image rolled onto its replicas with no downtime.

A deploy, for each app, while holding the project lock (a second deploy waits its turn):
fetch the app's git source at the ref (or take its local `source`), render and build the image, run
its migrations once, replace its replicas one at a time (engine/rollout.py), then its Celery workers.
If a new replica fails its health check, the old image goes back on every replica, the checkout goes
back to the commit that was deployed, and the error says why. Every attempt is a line of history.
"""

from __future__ import annotations

import dataclasses
import getpass
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from deploystack import gitsource, history
from deploystack.engine.report import Reporter
from deploystack.errors import DeployError, StackError, UsageError
from deploystack.operations.output import write_rendered
from deploystack.operations.session import Session
from deploystack.plan.apc import migrate_job, worker_service
from deploystack.plan.project import subset
from deploystack.render.project import Rendered
from deploystack.spec import Stack
from deploystack.target import Target

if TYPE_CHECKING:
    from deploystack.engine.client import DockerClient

QUEUE_WAIT_S = 3600.0  # a deploy waits this long for the one before it


def default_trigger() -> str:
    try:
        return f"cli ({getpass.getuser()})"
    except (KeyError, OSError):
        return "cli"


def apps_to_deploy(stack: Stack, app: str | None, ref: str | None) -> list[str]:
    """The named app; else with --ref every app deployed from git; else every app."""
    if app is not None:
        if app not in stack.apc.apps:
            raise UsageError(f"no app {app!r} in this stack (apps: {', '.join(stack.apc.apps)})")
        if ref is not None and stack.apc.apps[app].git is None:
            raise UsageError(f"--ref needs a git source: app {app} is built from its folder "
                             f"(apc.apps.{app}.git)")
        return [app]
    if ref is not None:
        from_git = [name for name, spec in stack.apc.apps.items() if spec.git is not None]
        if not from_git:
            raise UsageError("--ref needs an app deployed from git (apc.apps.<name>.git); this stack has none")
        return from_git
    return list(stack.apc.apps)


def deploy(session: Session, app: str | None, ref: str | None, trigger: str | None = None,
           wait_s: float = QUEUE_WAIT_S, descendants_only: bool = False) -> list[history.Deploy]:
    """`descendants_only`: the CDC's runner deploys a push only if its commit follows the deployed one
    (gitsource.NotDescendant otherwise); `deploystack deploy --ref` by hand deploys any commit."""
    if ref is not None:
        gitsource.check_ref(ref)
    stack = session.stack
    names = apps_to_deploy(stack, app, ref)
    session.require_generated()
    session.connect()
    session.refuse_pending_upgrade(stack.project, stack.dbc.ha == "patroni")
    with session.lock(wait_s, session.report):
        return [Deployer(session, name, trigger or default_trigger(), descendants_only=descendants_only).deploy(ref)
                for name in names]


def rollback(session: Session, app: str | None, trigger: str | None = None,
             wait_s: float = QUEUE_WAIT_S) -> list[history.Deploy]:
    stack = session.stack
    session.require_generated()
    session.connect()
    session.refuse_pending_upgrade(stack.project, stack.dbc.ha == "patroni")
    with session.lock(wait_s, session.report):
        records = history.read(session.output)
        names = apps_to_deploy(stack, app, None) if app else sorted({r.app for r in records if r.result == history.OK})
        done = []
        for name in names:
            back_to = history.rollback_target(records, name)
            if back_to is None:
                if app is not None:
                    raise UsageError(f"{name} has no earlier deploy to roll back to (deploystack history)")
                continue
            deployer = Deployer(session, name, trigger or default_trigger())
            done.append(deployer.rollback(back_to))
        if not done:
            raise UsageError("nothing to roll back: no app has an earlier deploy (deploystack history)")
        return done


@dataclass
class Deployer:
    """One app's deploy or rollback in a session (which holds the spec, the engine and the lock)."""

    session: Session
    app: str
    trigger: str
    previous_ref: str = ""
    descendants_only: bool = False

    @property
    def client(self) -> DockerClient:
        return self.session.client

    @property
    def target(self) -> Target:
        return self.session.target

    @property
    def stack(self) -> Stack:
        return self.session.stack

    @property
    def report(self) -> Reporter:
        return self.session.report

    def deploy(self, ref: str | None) -> history.Deploy:
        from deploystack.engine import images

        started, clock = _now(), time.monotonic()
        git = self.stack.apc.apps[self.app].git
        old = self._running()  # what runs now, kept in memory to go back to
        old_commit = gitsource.head(self.target.output, self.app) if git else None
        self.previous_ref = self._current_ref() or old_commit or ""
        self.report.step(f"deploying {self.app}" + (f" at {ref}" if ref else ""))
        try:
            commit = "source"
            if git is not None:
                commit = gitsource.fetch(self.app, git, self.target.spec.resolve().parent, self.target.output, ref,
                                         old_commit if self.descendants_only else None)
                self.report.step(f"{self.app}: {git.url} {git.branch} at {commit[:12]}")
            new = self.session.render()  # the source has moved: rendered again
            write_rendered(new)
            images.ensure_base_images(self.client, new, self.report)
            images.build_images(self.client, new, self.report)
            self._migrate(new)
        except DeployError as exc:
            self._restore_source(old, old_commit)
            result = history.REFUSED if isinstance(exc, gitsource.NotDescendant) else history.FAILED
            self._record(started, clock, "deploy", ref or "source", old, old, result, str(exc))
            raise
        return self._roll(new, old, old_commit, started, clock, "deploy", commit)

    def rollback(self, back_to: history.Deploy) -> history.Deploy:
        from deploystack.engine import images

        started, clock = _now(), time.monotonic()
        old = self._running()
        self.previous_ref = self._current_ref() or ""
        self.report.step(f"rolling {self.app} back to {back_to.image} ({back_to.ref[:12]})")
        if not images.image_exists(self.client, back_to.image):
            again = (f"deploystack deploy {self.app} --ref {back_to.ref}" if back_to.ref not in ("source", "previous")
                     else "deploy that version again")
            raise UsageError(f"image {back_to.image} is no longer on this engine: {again}")
        new = self._with_image(old, back_to.image)
        return self._roll(new, old, None, started, clock, "rollback", back_to.ref)

    # -- steps --------------------------------------------------------------------------------------

    def _current_ref(self) -> str | None:
        last = history.current(history.read(self.target.output), self.app)
        return last.ref if last is not None else None

    def _running(self) -> Rendered:
        """The rendered project as it runs: a local source may have changed since its image was built."""
        from deploystack.engine import lookup

        rendered = self.session.render()  # now: an earlier app of this deploy changed the output
        image = lookup.running_image(self.client, rendered.plan.project, self.app)
        if image is None or image == rendered.images[self.app]:
            return rendered
        return self._with_image(rendered, image)

    def _with_image(self, rendered: Rendered, image: str) -> Rendered:
        images = {name: image if _app_of(rendered, name) == self.app else ref
                  for name, ref in rendered.images.items()}
        return dataclasses.replace(rendered, images=images)

    def _migrate(self, new: Rendered) -> None:
        """The app's migrations, once, before any replica changes (the project lock is held)."""
        from deploystack.engine import apply, lookup

        job = migrate_job(self.app)
        if job not in {s.name for s in new.plan.services}:
            return
        self.report.step(f"{self.app}: running migrations")
        lookup.remove_service_containers(self.client, new.plan.project, job)  # migrate even when unchanged
        part = dataclasses.replace(new, plan=subset(new.plan, [job]))
        apply.Converger(self.client, part, self.report).up(partial=True)

    def _roll(self, new: Rendered, old: Rendered, old_commit: str | None, started: str, clock: float,
              kind: str, ref: str) -> history.Deploy:
        from deploystack.engine import apply
        from deploystack.engine.rollout import Rollout

        rollout = Rollout(self.client, new, self.app, self.report)
        worker = worker_service(self.app)
        workers = worker in {s.name for s in new.plan.services}
        try:
            rollout.run()
            if workers:
                part = dataclasses.replace(new, plan=subset(new.plan, [worker]))
                apply.Converger(self.client, part, self.report).up(partial=True)
        except DeployError as exc:
            self.report.step(f"{self.app}: the new version failed; putting {old.images[self.app]} back")
            rollout.restore(old)
            if workers:
                part = dataclasses.replace(old, plan=subset(old.plan, [worker]))
                apply.Converger(self.client, part, self.report).up(partial=True)
            self._restore_source(old, old_commit)
            reason = str(exc).splitlines()[0]
            self._record(started, clock, kind, ref, new, old, history.ROLLED_BACK, reason)
            raise StackError(f"{kind} of {self.app} ({ref[:12]}) failed and was rolled back: every replica "
                             f"runs {old.images[self.app]} again.\n{exc}") from None
        record = self._record(started, clock, kind, ref, new, old, history.OK)
        self.report.step(f"{self.app}: {new.images[self.app]} on {new.plan.service(self.app).replicas} "
                         f"replica(s) in {record.seconds:.0f}s")
        return record

    def _restore_source(self, old: Rendered, old_commit: str | None) -> None:
        """Back to what was deployed: the checkout's commit and the output's files."""
        git = self.stack.apc.apps[self.app].git
        if git is not None and old_commit is not None and gitsource.head(self.target.output, self.app) != old_commit:
            gitsource.fetch(self.app, git, self.target.spec.resolve().parent, self.target.output, old_commit)
        write_rendered(old)

    def _record(self, started: str, clock: float, kind: str, ref: str, new: Rendered, old: Rendered,
                result: str, message: str = "") -> history.Deploy:
        record = history.Deploy(
            app=self.app, kind=kind, ref=ref, image=new.images[self.app],
            source_image=new.source_images[self.app], previous=old.images[self.app], started=started,
            seconds=round(time.monotonic() - clock, 1), trigger=self.trigger, result=result, message=message,
            previous_ref=self.previous_ref)
        history.append(self.target.output, record)
        return record


def _app_of(rendered: Rendered, service: str) -> str | None:
    build = rendered.plan.service(service).build
    return build.app if build is not None else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
