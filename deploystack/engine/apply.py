"""Converge a rendered project onto the engine: networks, volumes, then containers in dependency order.

A service starts once everything it depends on is healthy (or, for a one-shot job, has exited 0);
services whose dependencies are ready start together, so independent backing services come up in
parallel. Running containers whose config hash is unchanged are left alone: `up` twice does nothing.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import EndpointConfig, LogConfig, Mount

from deploystack import labels
from deploystack.engine import converge, images, patroni
from deploystack.engine.client import engine_errors
from deploystack.engine.containers import CONFIG_MOUNT, ContainerSpec, interpolate, wanted_specs
from deploystack.engine.health import Readiness, wait_ready
from deploystack.engine.lookup import project_containers
from deploystack.engine.provision import provision
from deploystack.engine.reload import reload_service
from deploystack.engine.replace import replace_replica
from deploystack.engine.report import Reporter
from deploystack.engine.teardown import stop_and_remove
from deploystack.errors import EngineError
from deploystack.plan.dbc import PRIMARY
from deploystack.plan.model import ProjectPlan, Service
from deploystack.plan.names import DB_ROUTER, ETCD_PREFIX, NODE_PREFIX, Role, network_name, volume_name
from deploystack.plan.patroni import planned_dynamic_config
from deploystack.render.project import Rendered


def observed(container: Container) -> converge.Observed:
    lab = container.labels
    state = container.attrs.get("State", {})
    return converge.Observed(
        id=container.id or "", service=lab.get(labels.SERVICE, ""), number=int(lab.get(labels.NUMBER, "1")),
        name=container.name or "", config_hash=lab.get(labels.CONFIG_HASH, ""),
        status=state.get("Status", container.status), exit_code=int(state.get("ExitCode", 0)),
    )


@dataclass
class Outcome:
    """What `up` did, for the summary and for tests."""

    steps: list[converge.Step] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.reloaded) or any(s.action != converge.Action.NOOP for s in self.steps)


class Converger:
    def __init__(self, client: docker.DockerClient, rendered: Rendered, report: Reporter) -> None:
        self.client = client
        self.rendered = rendered
        self.plan: ProjectPlan = rendered.plan
        self.report = report
        self.outcome = Outcome()
        self.app_changes = False  # an app replica was added, replaced or removed: the LBC reloads
        self.created: set[str] = set()  # containers made in this run load their config at start
        self.leaving: list[converge.Step] = []  # replicas to stop once the LBC no longer sends them traffic

    # -- the whole project --------------------------------------------------------------------------

    def up(self, partial: bool = False) -> Outcome:
        """`partial`: the plan is a subset of the project (a deploy's migrations, say): other services'
        containers are not orphans."""
        self._networks()
        self._volumes()
        existing = [observed(c) for c in project_containers(self.client, self.plan.project)]
        for step in [] if partial else converge.orphans({s.name for s in self.plan.services}, existing):
            self._remove(step)
        self._join_new_networks()
        pending = list(self.plan.services)
        ready: set[str] = set()
        waiting: dict[str, list[Readiness]] = {}
        while pending or waiting:
            batch = [s for s in pending if all(d in ready for d in s.depends_on)]
            for service in batch:
                pending.remove(service)
            # Patroni's nodes share their dependencies (etcd): they come in one batch, replaced one by one.
            nodes = [s for s in batch if s.name.startswith(NODE_PREFIX)]
            if nodes:
                self._roll_db_nodes(nodes, existing)
                existing = [observed(c) for c in project_containers(self.client, self.plan.project)]
            # etcd's members too (none depends on another): one at a time, so that a quorum stays.
            members = [s for s in batch if s.name.startswith(ETCD_PREFIX)]
            if len(members) > 1:
                self._roll_etcd(members, existing)
                existing = [observed(c) for c in project_containers(self.client, self.plan.project)]
            for service in batch:
                mine = [o for o in existing if o.service == service.name]
                waiting[service.name] = self._converge_service(service, mine)
            for name, checks in list(waiting.items()):
                if all(check.poll() for check in checks):  # raises StackError on failure or timeout
                    del waiting[name]
                    ready.add(name)
                    self._after_ready(self.plan.service(name))
            if waiting:
                time.sleep(0.5)
        self._stop_leaving()  # no LBC in the plan (or it failed to reload): they go now
        return self.outcome

    def _networks(self) -> None:
        for net in self.plan.networks:
            name = network_name(self.plan.project, net.name)
            with engine_errors(f"creating network {name}"):
                found = self.client.networks.list(names=[name])
                match = [n for n in found if n.name == name]
                if match:
                    if bool(match[0].attrs.get("Internal")) != net.internal:
                        raise EngineError(f"network {name} exists with other settings: run deploystack down first")
                    continue
                self.report.step(f"network {name}")
                self.client.networks.create(name, driver="bridge", internal=net.internal, labels={
                    labels.PROJECT: self.plan.project, labels.NETWORK: net.name})

    def _join_new_networks(self) -> None:
        """Patroni's etcd members and nodes are replaced one at a time, and a replaced one must still reach
        those not replaced yet: a running member or node that lacks a network its service is planned on now
        (a stack made before etcd had the `dcs` network of its own) joins it first, under its service's name,
        and keeps its other networks until it is replaced. Otherwise the first new etcd member (on `dcs`
        only) would find no peer, and the old nodes (on `private` only) no new member."""
        patroni = {s.name: s for s in self.plan.services if s.name.startswith((ETCD_PREFIX, NODE_PREFIX))}
        if not patroni:
            return
        for container in project_containers(self.client, self.plan.project):
            service = patroni.get(container.labels.get(labels.SERVICE, ""))
            if service is None or container.status != "running":
                continue
            attached = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
            for net in service.networks:
                name = network_name(self.plan.project, net)
                if name in attached:
                    continue
                self.report.step(f"{container.name} joins network {name} until it is replaced")
                with engine_errors(f"connecting {container.name} to {name}"):
                    self.client.networks.get(name).connect(container, aliases=[service.name, *service.aliases])

    def _volumes(self) -> None:
        for volume in self.plan.volumes:
            name = volume_name(self.plan.project, volume)
            with engine_errors(f"creating volume {name}"):
                try:
                    self.client.volumes.get(name)
                except docker.errors.NotFound:
                    self.client.volumes.create(name, labels={
                        labels.PROJECT: self.plan.project, labels.VOLUME: volume})

    # -- one service --------------------------------------------------------------------------------

    def _converge_service(self, service: Service, mine: list[converge.Observed]) -> list[Readiness]:
        specs = {s.number: s for s in wanted_specs(self.rendered, service)}
        wanted = [converge.Wanted(service.name, s.number, s.name, s.config_hash, service.one_shot)
                  for s in specs.values()]
        steps = converge.plan_service(wanted, mine)
        if service.scalable:
            # Replicas that are not serving anyway are replaced first: the running ones keep serving,
            # and the LBC's reloads between replacements never name a replica that is down.
            running = {o.number for o in mine if o.status == "running"}
            steps.sort(key=lambda step: step.number in running)
        self.outcome.steps += steps
        checks: list[Readiness] = []
        for step in steps:
            spec = specs.get(step.number)
            if step.action == converge.Action.REMOVE and service.upstream:
                self.leaving.append(step)  # out of the LBC's upstreams first (see _after_ready)
            elif step.action == converge.Action.REMOVE:
                self._remove(step)
            elif spec is None:
                continue
            elif step.action == converge.Action.NOOP:
                checks.append(wait_ready(self.client, spec.name, service, self.report))
            elif step.action == converge.Action.START:
                self.report.step(f"starting {spec.name}")
                with engine_errors(f"starting {spec.name}"):
                    self.client.containers.get(spec.name).start()
                checks.append(wait_ready(self.client, spec.name, service, self.report))
            elif step.action == converge.Action.RECREATE and service.scalable:
                self._recreate_replica(service, step, spec)
            else:
                if step.action == converge.Action.RECREATE:
                    self._remove(step)
                self._create(spec)
                checks.append(wait_ready(self.client, spec.name, service, self.report))
            if service.upstream and step.action != converge.Action.NOOP:
                self.app_changes = True
        return checks

    def _recreate_replica(self, service: Service, step: converge.Step, spec: ContainerSpec) -> None:
        """One replica at a time, each healthy before the next goes: the others keep serving.

        A replica the LBC lists is replaced as a deploy replaces it (engine/replace.py: parked while it
        serves, one reload, then stopped); the module's docstring says why the others, and a replica whose
        container has another name, are removed then created."""
        if service.upstream and step.observed is not None and step.observed.name == spec.name:
            self.report.step(f"replacing {spec.name} (configuration changed)")
            replace_replica(self.client, spec, self.report, create=self._create,
                            reload=lambda: self._reload_lbc_if_running(mid_rollout=True))
            return
        self._remove(step)
        self._create(spec)
        wait_ready(self.client, spec.name, service, self.report).wait()
        if service.upstream:
            self._reload_lbc_if_running(mid_rollout=True)

    def _roll_db_nodes(self, nodes: list[Service], existing: list[converge.Observed]) -> None:
        """Replace the running Patroni nodes whose configuration changed one at a time, standbys first, each
        streaming again before the next goes; then a switchover and the old leader: the database stays up.
        Anything else about the nodes (new ones, stopped ones) is left to _converge_service."""
        running = {o.service: o for o in existing if o.status == "running"}
        to_replace: dict[str, tuple[Service, converge.Step]] = {}
        for service in nodes:
            specs = [converge.Wanted(service.name, s.number, s.name, s.config_hash)
                     for s in wanted_specs(self.rendered, service)]
            for step in converge.plan_service(specs, [o for o in existing if o.service == service.name]):
                if step.action == converge.Action.RECREATE and service.name in running:
                    to_replace[service.name] = (service, step)
        if not to_replace:
            return
        names = [s.name for s in nodes]
        before = patroni.status(self.client, self.plan.project, names)
        streaming = [m.service for m in before.members if m.patroni_state == "streaming"]
        roll = converge.roll_nodes(list(to_replace), before.leader, streaming)
        if roll is None:
            return  # no leader or nothing to hand over to: replaced together, as before
        self.report.step(f"rolling replacement of {', '.join(to_replace)} (leader: {before.leader})")
        # First the spec's settings into etcd, so that each node starts with them (max_connections...).
        patroni.ensure_dynamic_config(self.client, self.plan.project, names, planned_dynamic_config(self.plan),
                                      self.report)
        for name in roll.standbys:
            self._replace_node(*to_replace[name], names)
        if roll.leader is not None:
            patroni.change_leader(self.client, self.plan.project, names, None, False, self.report)
            self._replace_node(*to_replace[roll.leader], names)

    def _roll_etcd(self, members: list[Service], existing: list[converge.Observed]) -> None:
        """Replace the etcd members whose configuration changed one at a time, each healthy (it answers
        /health only once it sees a leader and a quorum) before the next goes: Patroni keeps its store and
        the leader its key. Its data volume stays, so a member comes back as itself."""
        steps: dict[str, tuple[Service, converge.Step]] = {}
        for service in members:
            specs = [converge.Wanted(service.name, s.number, s.name, s.config_hash)
                     for s in wanted_specs(self.rendered, service)]
            for step in converge.plan_service(specs, [o for o in existing if o.service == service.name]):
                if step.action == converge.Action.RECREATE:
                    steps[service.name] = (service, step)
        running = [o.service for o in existing if o.status == "running" and o.service in {s.name for s in members}]
        order = converge.roll_members(list(steps), running, len(members))
        if order is None:
            return  # nothing to replace, or too few members up for a quorum: together, as before
        self.report.step(f"rolling replacement of {', '.join(order)}")
        for name in order:
            service, step = steps[name]
            spec = next(s for s in wanted_specs(self.rendered, service) if s.number == step.number)
            self._remove(step)
            self._create(spec)
            wait_ready(self.client, spec.name, service, self.report).wait()
            self.outcome.steps.append(step)

    def _replace_node(self, service: Service, step: converge.Step, nodes: list[str]) -> None:
        """Recreate one Patroni node and wait until Patroni reports it streaming from the leader."""
        spec = next(s for s in wanted_specs(self.rendered, service) if s.number == step.number)
        self._remove(step)
        self._create(spec)
        wait_ready(self.client, spec.name, service, self.report).wait()
        patroni.wait_streaming(self.client, self.plan.project, nodes, service.name, self.report)
        self.outcome.steps.append(step)

    def _after_ready(self, service: Service) -> None:
        self.report.step(f"{service.name} ready")
        if service.name in (PRIMARY, DB_ROUTER) and self.plan.tenancy is not None:
            # Before anything that depends on the primary (migrations, apps) starts. (With Patroni, the
            # router is healthy once a leader is.)
            provision(self.client, self.plan.project, self.plan.tenancy, self.rendered.secrets, self.report)
            if service.name == DB_ROUTER:
                nodes = [s.name for s in self.plan.services if s.name.startswith(NODE_PREFIX)]
                patroni.ensure_dynamic_config(self.client, self.plan.project, nodes,
                                              planned_dynamic_config(self.plan), self.report)
        if service.reload is not None:
            self._reload_if_stale(service)
            if service.role == Role.LBC:
                self._stop_leaving()

    def _stop_leaving(self) -> None:
        """Stop replicas that left the upstreams: the APC's own nginx finishes requests in flight."""
        for step in self.leaving:
            self._remove(step)
        self.leaving = []

    def _create(self, spec: ContainerSpec) -> None:
        create_container(self.client, self.rendered, spec, self.report)
        self.created.add(spec.name)

    def _remove(self, step: converge.Step) -> None:
        have = step.observed
        if have is None:
            return
        grace = next((s.stop_grace_s for s in self.plan.services if s.name == step.service), 10)
        self.report.step(f"removing {have.name}" if step.action == converge.Action.REMOVE
                         else f"replacing {have.name} (configuration changed)")
        # A container gone already has nothing to remove.
        with engine_errors(f"removing {have.name}"), contextlib.suppress(docker.errors.NotFound):
            stop_and_remove(self.client.containers.get(have.id), grace)
        if step.action == converge.Action.REMOVE and any(
                s.name == step.service and s.upstream for s in self.plan.services):
            self.app_changes = True

    # -- reloading the LBC --------------------------------------------------------------------------

    def _reload_lbc_if_running(self, mid_rollout: bool = False) -> None:
        for service in self.plan.services:
            if service.reload is not None and service.role == Role.LBC:
                try:
                    self._reload(service, force=True)
                except EngineError as exc:
                    if not mid_rollout:
                        raise
                    # e.g. a replica of another app, new in this run, does not exist yet: nginx keeps
                    # its old configuration (passive checks route around the replaced replica) until
                    # the LBC's own step reloads it, which must succeed.
                    self.report.step(f"LBC not reloaded mid-rollout, will be at the end: {str(exc).splitlines()[-1]}")

    def _reload_if_stale(self, service: Service) -> None:
        self._reload(service, force=self.app_changes)

    def _reload(self, service: Service, force: bool) -> None:
        """Run the service's reload command when its config changed since it last loaded it (engine/reload.py)."""
        name = self.plan.container_name(service)
        if reload_service(self.client, self.rendered, service, self.report, force=force, fresh=name in self.created):
            self.report.step(f"reloaded {name}")
            self.outcome.reloaded.append(name)


def service_mounts(rendered: Rendered, service: Service) -> list[Mount]:
    """The service's volumes and binds, and its rendered config folder at /etc/deploystack."""
    mounts = [
        Mount(target=interpolate(m.target, rendered.secrets), type="bind" if m.bind else "volume",
              read_only=m.read_only,
              source=str((rendered.output / m.source).resolve()) if m.bind
              else volume_name(rendered.plan.project, m.source))
        for m in service.mounts
    ]
    if service.config_dir:
        mounts.append(Mount(target=CONFIG_MOUNT, source=str(rendered.output / service.config_dir),
                            type="bind", read_only=True))
    return mounts


def replica_hostname(spec: ContainerSpec) -> str:
    """A container's host name: `<service>-<n>-<tag>` (e.g. backend-2-9f3c), which the APC's nginx sends
    as X-Served-By. Docker's default is the container id, which must not reach the internet; the random
    tag tells a replica apart from the one it replaced (a deploy, a recreation)."""
    return f"{spec.service.name}-{spec.number}-{secrets.token_hex(2)}"


def hardening_options(service: Service) -> dict[str, Any]:
    """The SDK's create() options for what compose.yaml says of the service's hardening (docs/security.md):
    capabilities, no-new-privileges, read-only root and tmpfs, memory and pids limits, rotated logs."""
    return {
        "cap_add": list(service.cap_add) or None,
        "cap_drop": list(service.cap_drop) or None,
        "security_opt": list(service.security_opt) or None,
        "read_only": service.read_only,
        "tmpfs": {t.target: t.options for t in service.tmpfs} or None,
        "mem_limit": service.mem_limit,
        "pids_limit": service.pids_limit,
        "log_config": None if service.logging is None else LogConfig(
            type=LogConfig.types.JSON, config=service.logging.options),
    }


def create_container(client: docker.DockerClient, rendered: Rendered, spec: ContainerSpec,
                     report: Reporter) -> Container:
    """Create and start one container of a service, on its networks, with its mounts and health check."""
    service = spec.service
    project = rendered.plan.project
    report.step(f"creating {spec.name}")
    mounts = service_mounts(rendered, service)
    hc = service.healthcheck
    healthcheck = None if hc is None else {
        "test": ["CMD", *hc.test], "interval": hc.interval_s * 10**9, "timeout": hc.timeout_s * 10**9,
        "retries": hc.retries, "start_period": hc.start_period_s * 10**9,
    }
    first, *others = service.networks
    aliases = [service.name, *service.aliases]
    options: dict[str, Any] = dict(
        command=list(service.command) if service.command else None,
        name=spec.name,
        hostname=replica_hostname(spec),
        environment=spec.environment,
        labels=spec.labels,
        healthcheck=healthcheck,
        mounts=mounts,
        ports={f"{p.container_port}/tcp": (p.host_ip, p.host_port) for p in service.ports},
        restart_policy={"Name": "no"} if service.one_shot else {"Name": "unless-stopped"},
        **hardening_options(service),
        network=network_name(project, first),
        networking_config={network_name(project, first): EndpointConfig(
            version=client.api._version, aliases=aliases)},
        detach=True,
    )
    with engine_errors(f"creating {spec.name}"):
        try:
            container = client.containers.create(spec.image, **options)
        except docker.errors.ImageNotFound:
            # Removed since `up` built it (a `deploystack prune` or `docker image prune` meanwhile, which
            # sees no container made from it yet): built again, once, rather than a failed `up`.
            report.step(f"{spec.image} is gone (pruned meanwhile?): building it again")
            images.build_images(client, rendered, report)
            container = client.containers.create(spec.image, **options)
        for net in others:
            client.networks.get(network_name(project, net)).connect(container, aliases=aliases)
        container.start()
    return container
