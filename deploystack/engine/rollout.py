"""Replace an app's replicas one at a time with no failed request: the rolling step of `deploy`.

For each replica `<project>-<app>-<n>`:

1. the running container is renamed `<name>-old` (nginx keeps its address from its last reload, so it
   goes on serving);
2. a new container takes the name and must pass its health check;
3. the LBC reloads once: its new workers resolve the name to the new container, its old workers finish
   the requests they hold with the old one (bounded wait). One reload per replica, because each reload
   closes the LBC's idle kept-alive client connections, and a request sent on one at that instant is
   lost (docs/cdc.md);
4. the old container stops: its own nginx and app server finish what is in flight.

A new replica that fails its health check stops the rollout: it is removed, its old container gets its
name back, and `Rollout.restore` puts the old definition back on the replicas already replaced.
"""

from __future__ import annotations

import docker
import docker.errors
from docker.models.containers import Container

from deploystack.engine.apply import create_container, mark_applied, run_reload, stop_and_remove
from deploystack.engine.client import engine_errors
from deploystack.engine.containers import ContainerSpec, config_files_hash, wanted_specs
from deploystack.engine.health import wait_ready
from deploystack.engine.report import Reporter
from deploystack.errors import StackError
from deploystack.plan.names import Role
from deploystack.render.project import Rendered
from deploystack.render.writer import replace_file

PARKED = "-old"  # suffix of a replica being replaced, while it still serves


class Rollout:
    def __init__(self, client: docker.DockerClient, rendered: Rendered, app: str, report: Reporter) -> None:
        self.client = client
        self.rendered = rendered
        self.service = rendered.plan.service(app)
        self.report = report
        self.lbc = next((s for s in rendered.plan.services if s.role == Role.LBC), None)
        self.replaced: list[int] = []  # replica numbers running the new definition

    def run(self) -> None:
        """Replace every replica (changed or not: a deploy restarts them all), one at a time."""
        for spec in wanted_specs(self.rendered, self.service):
            self._replace(spec)  # ends with the LBC on the plan's own config
            self.replaced.append(spec.number)

    def restore(self, old: Rendered) -> None:
        """Put `old`'s definition back on the replicas this rollout replaced (same one-at-a-time steps)."""
        back = Rollout(self.client, old, self.service.name, self.report)
        for spec in wanted_specs(old, back.service):
            if spec.number in self.replaced:
                back._replace(spec)

    # -- one replica --------------------------------------------------------------------------------

    def _replace(self, spec: ContainerSpec) -> None:
        old = self._container(spec.name)
        if old is not None and old.status != "running":  # not serving: nothing to hand over
            self._stop(old)
            old = None
        parked = spec.name + PARKED
        leftover = self._container(parked)  # from a run that was killed half-way
        if leftover is not None:
            self._stop(leftover)
        if old is not None:
            with engine_errors(f"renaming {spec.name}"):
                old.rename(parked)
        self.report.step(f"{spec.name}: starting the new replica")
        try:
            create_container(self.client, self.rendered, spec, self.report)
            wait_ready(self.client, spec.name, self.service, self.report).wait()
        except StackError:
            new = self._container(spec.name)
            if new is not None:
                self._stop(new, grace=0)
            if old is not None:
                with engine_errors(f"renaming {parked} back"):
                    old.rename(spec.name)
            raise
        self._reload()
        if old is not None:
            self.report.step(f"{spec.name}: replaced; stopping the old replica")
            self._stop(old)

    def _container(self, name: str) -> Container | None:
        with engine_errors(f"inspecting {name}"):
            try:
                return self.client.containers.get(name)
            except docker.errors.NotFound:
                return None

    def _stop(self, container: Container, grace: int | None = None) -> None:
        with engine_errors(f"removing {container.name}"):
            stop_and_remove(container, self.service.stop_grace_s if grace is None else grace)

    # -- the LBC ------------------------------------------------------------------------------------

    def _reload(self) -> None:
        """Write the plan's LBC nginx.conf, reload, wait for nginx's old workers, record it applied."""
        if self.lbc is None:
            return
        lbc_name = self.rendered.plan.container_name(self.lbc)
        lbc = self._container(lbc_name)
        if lbc is None or lbc.status != "running" or self.lbc.reload is None:
            return
        path = f"{self.lbc.config_dir}/nginx.conf"
        # Atomically: the LBC bind-mounts the folder and must never read half a file.
        replace_file(self.rendered.output / path, self.rendered.files[path])
        with engine_errors(f"reloading {lbc_name}"):
            run_reload(lbc, self.lbc.reload, self.report)
            mark_applied(lbc, config_files_hash(self.rendered, self.lbc))
