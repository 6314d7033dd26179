"""Replace an app's replicas one at a time with no failed request: the rolling step of `deploy`.

Every replica, changed or not (a deploy restarts them all), goes through engine/replace.py's steps: parked
as `<name>-old` while it serves, the new one healthy under the name, one LBC reload (engine/reload.py),
the old one stopped.

A new replica that fails its health check stops the rollout: it is removed, its old container gets its
name back, and `Rollout.restore` puts the old definition back on the replicas already replaced.
"""

from __future__ import annotations

import docker

from deploystack.engine.apply import create_container
from deploystack.engine.containers import ContainerSpec, wanted_specs
from deploystack.engine.reload import reload_service
from deploystack.engine.replace import replace_replica
from deploystack.engine.report import Reporter
from deploystack.plan.names import Role
from deploystack.render.project import Rendered


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

    def _replace(self, spec: ContainerSpec) -> None:
        replace_replica(self.client, spec, self.report, create=self._create, reload=self._reload)

    def _create(self, spec: ContainerSpec) -> None:
        create_container(self.client, self.rendered, spec, self.report)

    def _reload(self) -> None:
        """The LBC on the plan's own config, reloaded even when its files are unchanged: nginx resolves the
        replica's name again."""
        if self.lbc is not None:
            reload_service(self.client, self.rendered, self.lbc, self.report, force=True)
