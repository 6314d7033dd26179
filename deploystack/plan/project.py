"""Stack -> ProjectPlan: every role's services, networks, volumes and config files, in start order."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from deploystack.errors import DeployError, UsageError
from deploystack.plan.acc import plan_acc
from deploystack.plan.apc import external_names, plan_apc
from deploystack.plan.backups import needs_egress
from deploystack.plan.cdc import EGRESS_NETWORK, HOOKS_NETWORK, QUEUE_VOLUME, RECEIVER, plan_cdc
from deploystack.plan.cdc import PORT as CDC_PORT
from deploystack.plan.dbc import OFFSITE_NETWORK, plan_dbc
from deploystack.plan.hardening import log_rotation
from deploystack.plan.lbc import fail2ban_configs, plan_lbc
from deploystack.plan.mmc import plan_mmc
from deploystack.plan.model import Network, ProjectPlan, Service
from deploystack.plan.patroni import DCS_NETWORK, plan_patroni, replication_roles
from deploystack.plan.patroni import enabled as patroni_enabled
from deploystack.plan.secrets import app_secret, secret_names
from deploystack.plan.tenancy import plan_tenancy
from deploystack.spec.models import Stack


class CycleError(DeployError):
    """Services depend on each other in a loop: a bug in a planner, never a user's input."""


def build_plan(stack: Stack, project_dir: str = "..", swarm: bool = False,
               env_files: Mapping[str, Collection[str]] | None = None) -> ProjectPlan:
    """`project_dir`: the spec's folder relative to the output directory (Compose resolves from there).

    `env_files`: app -> the variable names its env files give it (spec/appenv.py reads them).

    `swarm`: the plan for Docker Swarm: the LBC finds apps through Docker's DNS, and there is no CDC (it
    drives one engine through its socket and mounts the project folder, neither of which a swarm has).
    """
    db_services, db_volumes, db_configs = plan_patroni(stack) if patroni_enabled(stack) else plan_dbc(stack, swarm)
    acc_services, acc_volumes = plan_acc(stack)
    mmc_services, mmc_volumes = plan_mmc(stack)
    cdc_services, cdc_configs = plan_cdc(stack, project_dir) if not swarm else ([], [])
    lbc, lbc_volumes, lbc_conf = plan_lbc(stack, f"{RECEIVER}:{CDC_PORT}" if cdc_services else None, project_dir,
                                          swarm)
    services = [*db_services, *acc_services, *mmc_services, *plan_apc(stack, env_files), *cdc_services, lbc]
    logs = log_rotation(stack)  # the same for every container
    services = [replace(service, logging=logs) for service in services]
    networks = [Network("public", internal=False), Network("private", internal=True)]
    if cdc_services:
        # hooks: the LBC and the CDC's receiver only; egress: the CDC's runner only (docs/cdc.md).
        networks += [Network(HOOKS_NETWORK, internal=True), Network(EGRESS_NETWORK, internal=False)]
    elif needs_egress(stack):  # the backup service's way to an off-host target (dbc.backups.target)
        networks.append(Network(EGRESS_NETWORK, internal=False))
    if patroni_enabled(stack):  # Patroni's store: the etcd members and the nodes only
        networks.append(Network(DCS_NETWORK, internal=True))
    if stack.dbc.offsite is not None:
        networks.append(Network(OFFSITE_NETWORK, internal=False))  # db-primary's published port only
    return ProjectPlan(
        project=stack.project,
        services=tuple(start_order(services)),
        networks=tuple(networks),
        volumes=tuple(db_volumes + acc_volumes + mmc_volumes + lbc_volumes + ([QUEUE_VOLUME] if cdc_services else [])),
        configs=(*db_configs, *cdc_configs, lbc_conf, *fail2ban_configs(stack)),
        secrets=secret_names(stack),
        tenancy=replace(plan_tenancy(stack), replication_roles=replication_roles(stack)),
        app_secrets=tuple(app_secret(name, var) for name, app in stack.apc.apps.items()
                          for var in external_names(name, app, (env_files or {}).get(name, ()))),
    )


def start_order(services: list[Service]) -> list[Service]:
    """Dependencies first, otherwise in the given order (a stable topological sort)."""
    by_name = {s.name: s for s in services}
    done: dict[str, Service] = {}
    visiting: set[str] = set()

    def visit(service: Service) -> None:
        if service.name in done:
            return
        if service.name in visiting:
            raise CycleError(f"services depend on each other in a loop through {service.name!r}")
        visiting.add(service.name)
        for dep in service.depends_on:
            visit(by_name[dep])
        visiting.discard(service.name)
        done[service.name] = service

    for service in services:
        visit(service)
    return list(done.values())


def subset(plan: ProjectPlan, names: list[str]) -> ProjectPlan:
    """The plan reduced to `names` and everything they depend on (for tests that need one role)."""
    by_name = {s.name: s for s in plan.services}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(f"no service {', '.join(map(repr, unknown))} in this stack "
                         f"(services: {', '.join(by_name)})")
    keep: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += by_name[name].depends_on
    services = tuple(s for s in plan.services if s.name in keep)
    volumes = {m.source for s in services for m in s.mounts if not m.bind}
    return replace(plan, services=services, volumes=tuple(v for v in plan.volumes if v in volumes))
