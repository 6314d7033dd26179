"""ProjectPlan -> a stack file for `docker stack deploy`, as plain data (dumped like compose.yaml).

The same plan as the Compose file, with what a swarm needs instead: overlay networks, `deploy:` (replicas,
rolling updates, restart policies, limits, placement by node label), config files as Swarm configs and
the generated secrets as Swarm secrets. Both are immutable in a swarm, so their names carry a hash of
their content: a changed file is a new config, and the services using it are updated to it.

Secrets arrive in containers as files in /run/secrets; the images' lib.sh exports them as variables and
fills the `${NAME}` references that other variables hold (compose/_sourced/lib.sh, secrets_from_files).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from deploystack import labels
from deploystack.errors import UsageError
from deploystack.plan import patroni
from deploystack.plan.lbc import SWARM_RESOLVER_VALID_S
from deploystack.plan.model import ProjectPlan, Service
from deploystack.plan.names import DB_ROUTER, ETCD_PREFIX, PRIMARY, Role
from deploystack.render.compose import duration, hardening_dict, healthcheck_dict, quoted
from deploystack.spec.values import REFERENCE

if TYPE_CHECKING:
    from deploystack.spec.models import Stack

CONFIG_TARGET = "/etc/deploystack"
# Node labels that place the stateful services and the LBC (docs/swarm.md): `docker node update
# --label-add deploystack.edge=true NODE`.
LABEL_DB_PRIMARY = "deploystack.db-primary"
LABEL_DB_REPLICA = "deploystack.db-replica"
LABEL_DATA = "deploystack.data"
LABEL_EDGE = "deploystack.edge"
# dbc.ha: patroni: etcd-K and db-node-K are pinned to the node labelled deploystack.db-member-K (one label
# per place, so that a smaller swarm may give one node two of them, knowingly).
LABEL_DB_MEMBER_PREFIX = "deploystack.db-member-"
ROUTER_REPLICAS = 2  # dbc.ha: patroni's db-router on a swarm, spread over nodes (deploy())
CONSTRAINT = re.compile(r"node\.labels\.(deploystack\.[a-z0-9-]+) == true")


SWARM_HARDENING = ("cap_drop", "cap_add", "read_only", "logging")  # of compose.hardening_dict


@dataclass(frozen=True)
class Settings:
    endpoint_mode: str = "dnsrr"
    registry: str | None = None
    update_delay_s: int = 10
    encrypted: bool = True  # the private overlay (IPsec between nodes)


def registry_image(image: str, registry: str | None) -> str:
    """Where the nodes pull `image` from: the registry's copy, or (none) the node's own image store."""
    return f"{registry}/{image}" if registry else image


def content_name(stem: str, data: bytes) -> str:
    """A Swarm config or secret name for `data`: immutable objects, so the content is in the name."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:10]}"


def secret_key(name: str, value: str) -> str:
    """The stack file's name of secret `name` (`docker stack deploy` makes it `<project>_<key>`)."""
    return content_name(name.lower().replace("_", "-"), value.encode())


def all_secrets(plan: ProjectPlan) -> tuple[str, ...]:
    """The generated secrets and the apps' values from outside the spec: Swarm secrets, both."""
    return (*plan.secrets, *plan.app_secrets)


def secrets_used(service: Service, secret_names: tuple[str, ...]) -> list[str]:
    """The generated secrets `service` refers to in its environment."""
    used = {match.group(1) for _, value in service.environment for match in REFERENCE.finditer(value)}
    return [name for name in secret_names if name in used]


def swarm_value(value: str) -> str:
    """A plan value for the stack file: a `${SECRET}` reference must reach the container as written, for
    lib.sh to fill from /run/secrets, so it is escaped from `docker stack deploy`'s own interpolation."""
    return REFERENCE.sub(lambda m: "$$" if m.group(1) is None else "$${" + m.group(1) + "}", value)


def environment(service: Service, secret_names: tuple[str, ...]) -> dict[str, str]:
    # NAME=${NAME} would hide the secret file from lib.sh ("already set"): the file is that variable.
    env = {key: quoted(swarm_value(value)) for key, value in service.environment
           if not (key in secret_names and value == "${" + key + "}")}
    if service.upstream:
        # A stopping task keeps serving until the LBC's DNS answer without it is certain to be fresh.
        env = {"APP_STOP_DELAY": str(SWARM_RESOLVER_VALID_S + 1)} | env
    return env


def member_label(number: int) -> str:
    return f"{LABEL_DB_MEMBER_PREFIX}{number}"


def member_labels(stack: Stack) -> list[str]:
    """The labels a Patroni DBC is placed by, one per node it needs; none without Patroni."""
    return [member_label(n) for n in range(1, patroni.members(stack) + 1)] if patroni.enabled(stack) else []


def constraints(service: Service) -> list[str]:
    """Nodes labelled for them hold the data volumes (a volume stays on its node) and the edge. Patroni's
    etcd members and nodes each have a place of their own; its router, which holds nothing, runs anywhere."""
    member = patroni.member_number(service.name)
    if member is not None:
        return [f"node.labels.{member_label(member)} == true"]
    if service.name == DB_ROUTER:
        return []
    if service.name == PRIMARY:
        label = LABEL_DB_PRIMARY
    elif service.role == Role.DBC:
        label = LABEL_DB_REPLICA
    elif service.role == Role.LBC:
        label = LABEL_EDGE
    elif any(not mount.bind for mount in service.mounts):
        label = LABEL_DATA
    else:
        return []
    return [f"node.labels.{label} == true"]


def deploy(service: Service, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if service.role == Role.LBC:
        # One LBC on every edge node, each publishing the ports on its own host (no ingress mesh).
        out["mode"] = "global"
    elif service.name == DB_ROUTER:
        # Two routers on two nodes: a lost node may be the one the router ran on, and the survivor answers
        # while the swarm marks that node down (stateless; apps get both addresses: libpq tries the next).
        out["replicas"] = ROUTER_REPLICAS
    else:
        out["replicas"] = service.replicas
    out["endpoint_mode"] = settings.endpoint_mode
    placement: dict[str, Any] = {"constraints": constraints(service)} if constraints(service) else {}
    if service.scalable or service.name == DB_ROUTER:
        # An app's replicas over as many nodes as there are: losing one node loses the fewest of them.
        placement["preferences"] = [{"spread": "node.id"}]
    if placement:
        out["placement"] = placement
    limits = {**({"memory": service.mem_limit} if service.mem_limit else {}),
              **({"pids": service.pids_limit} if service.pids_limit else {})}
    if limits:
        out["resources"] = {"limits": limits}
    if service.one_shot:
        out["restart_policy"] = {"condition": "on-failure", "delay": "5s", "max_attempts": 20}
    else:
        out["restart_policy"] = {"condition": "any", "delay": "5s"}
    # Apps start their new task and wait for its health check before the old one stops; the LBC and the
    # stateful services cannot overlap (host ports; one server per data volume), so theirs stop first.
    order = "start-first" if service.scalable else "stop-first"
    if service.one_shot:
        # A job's task exits by design: the update's monitor would count that as a failure and roll back.
        out["update_config"] = {"parallelism": 1, "order": order, "failure_action": "continue"}
    else:
        out["update_config"] = {
            "parallelism": 1, "delay": duration(settings.update_delay_s), "order": order,
            "failure_action": "rollback", "monitor": "15s",
        }
        out["rollback_config"] = {"parallelism": 1, "order": order}
    out["labels"] = {labels.ROLE: service.role.value, **({labels.ONE_SHOT: "true"} if service.one_shot else {})}
    return out


def service_data(plan: ProjectPlan, service: Service, image: str, settings: Settings,
                 config_keys: dict[str, str], secret_keys: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"image": registry_image(image, settings.registry)}
    if service.command is not None:
        out["command"] = list(service.command)
    env = environment(service, all_secrets(plan))
    if env:
        out["environment"] = env
    out["networks"] = {
        net: ({"aliases": list(service.aliases)} if service.aliases and net == "private" else {})
        for net in service.networks
    }
    if service.ports:
        out["ports"] = [{"target": p.container_port, "published": p.host_port, "protocol": "tcp", "mode": "host"}
                        for p in service.ports]
    binds = [m for m in service.mounts if m.bind]
    if binds:
        raise UsageError(f"service {service.name} mounts host folders ({', '.join(m.source for m in binds)}), "
                         "which a swarm node may not have (lbc.tls: files is not supported with --engine swarm)")
    # tmpfs as mounts: the short `tmpfs:` key is not applied by `docker stack deploy`, and a mount takes
    # no owner or mode there: it gets the mode of the image's folder at its path, owned by root (the APC
    # image's /run/app is 1777 for that reason; measured: with 0750 the app user could not write to it).
    volumes = [{"type": "volume", "source": m.source, "target": m.target,
                **({"read_only": True} if m.read_only else {})} for m in service.mounts]
    volumes += [{"type": "tmpfs", "target": t.target, "tmpfs": {"size": t.size_bytes}} for t in service.tmpfs]
    if volumes:
        out["volumes"] = volumes
    if service.config_dir:
        out["configs"] = [
            {"source": key, "target": f"{CONFIG_TARGET}/{PurePosixPath(path).name}"}
            for path, key in config_keys.items() if PurePosixPath(path).parent == PurePosixPath(service.config_dir)
        ]
    used = secrets_used(service, all_secrets(plan))
    if used:
        out["secrets"] = [{"source": secret_keys[name], "target": name} for name in used]
    if service.healthcheck:
        out["healthcheck"] = healthcheck_dict(service.healthcheck)
        if service.name.startswith(ETCD_PREFIX) or service.name == DB_ROUTER:
            # A swarm's DNS names a task only once it is healthy, and restarts an unhealthy one: an etcd
            # member whose check needs a quorum would never be named to its peers (so none would get one);
            # a router whose check needs a leader would be gone when a failover's new leader runs. Their
            # check there is that they run.
            out["healthcheck"]["test"] = [*out["healthcheck"]["test"], "--answers"]
    # Compose's hardening keys, those `docker stack deploy` applies: capabilities need Docker 20.10 (API
    # 1.41) on the nodes; `security_opt` is not applied at all (a swarm gets no-new-privileges from the
    # daemons' own setting, docs/security.md); tmpfs and limits are written as mounts and `deploy:` here.
    out |= {key: value for key, value in hardening_dict(service).items() if key in SWARM_HARDENING}
    out["stop_grace_period"] = duration(service.stop_grace_s)
    out["labels"] = {labels.ROLE: service.role.value}
    out["deploy"] = deploy(service, settings)
    return out


def stack_data(plan: ProjectPlan, images: dict[str, str], settings: Settings, configs: dict[str, bytes],
               secrets: dict[str, str], files_dir: str = ".") -> dict[str, Any]:
    """The stack file. `configs`: rendered files by output path (config/lbc/nginx.conf); `secrets`: values
    by name. The stack file names them as files under `files_dir` (relative to the stack file's folder),
    where swarm_files puts them."""
    config_keys = {path: content_name(path.removeprefix("config/").replace("/", "-"), data)
                   for path, data in sorted(configs.items())}
    secret_keys = {name: secret_key(name, secrets[name]) for name in used_secrets(plan)}
    return {
        "services": {s.name: service_data(plan, s, images[s.name], settings, config_keys, secret_keys)
                     for s in plan.services},
        "networks": {n.name: {"driver": "overlay", **({"internal": True} if n.internal else {}),
                              **({"driver_opts": {"encrypted": "true"}} if n.internal and settings.encrypted else {})}
                     for n in plan.networks},
        "volumes": {v: {} for v in plan.volumes},
        "configs": {key: {"file": f"{files_dir}/{path}"} for path, key in config_keys.items()},
        "secrets": {key: {"file": f"{files_dir}/secrets/{name}"} for name, key in secret_keys.items()},
    }


def used_secrets(plan: ProjectPlan) -> list[str]:
    """The generated secrets some service of `plan` needs (the CDC's is not one on a swarm)."""
    used = {name for service in plan.services for name in secrets_used(service, all_secrets(plan))}
    return [name for name in all_secrets(plan) if name in used]


def secret_files(plan: ProjectPlan, secrets: dict[str, str]) -> dict[str, str]:
    """What `docker stack deploy` reads the secrets from: one file per secret, beside the stack file."""
    return {f"secrets/{name}": secrets[name] for name in used_secrets(plan)}


def not_carried_over(stack: Stack, plan: ProjectPlan) -> list[str]:
    """What of the spec a swarm does not do as this host's Compose engine does, one line each, and the node
    labels the stack file places services by (`export swarm` says it; `up --engine swarm` checks them)."""
    notes = []
    if stack.lbc.bind != "0.0.0.0":
        notes.append(f"lbc.bind {stack.lbc.bind} is ignored on a swarm: ports {stack.lbc.ports.http} and "
                     f"{stack.lbc.ports.https} listen on every address of each node labelled {LABEL_EDGE} "
                     "(firewall them where they must not be public)")
    if not stack.swarm.encrypted:
        notes.append("swarm.encrypted is false: the private network's traffic between nodes (database, cache, "
                     "apps) crosses the nodes' own network unencrypted: keep the nodes on a private link or VPN")
    if stack.cdc.enabled:
        notes.append("cdc is left out on a swarm (no /_cdc/ webhook): deploy with deploystack up --engine swarm")
    used = labels_placed_by(plan)
    if used:
        notes.append(f"services are placed by node label: give nodes {', '.join(used)} before deploying "
                     "(docker node update --label-add LABEL=true NODE; docs/swarm.md)")
    members = member_labels(stack)
    if members:
        notes.append(patroni_placement_note(members))
    return notes


def labels_placed_by(plan: ProjectPlan) -> list[str]:
    """The node labels the plan's services are constrained to, sorted."""
    return sorted({match.group(1) for service in plan.services for constraint in constraints(service)
                   if (match := CONSTRAINT.fullmatch(constraint))})


def patroni_placement_note(members: list[str]) -> str:
    etcds, nodes = patroni.ETCD_MEMBERS, len(members)
    return (f"dbc.ha patroni: etcd-K and db-node-K run only on the node labelled deploystack.db-member-K "
            f"(K = 1..{nodes}; their volumes stay there): put each of {', '.join(members)} on a different node "
            f"({nodes} nodes), so that losing a node loses one of the {etcds} etcd members and at most one "
            "PostgreSQL node. A node given two of them takes two etcd members down with it: etcd loses its "
            "quorum and no failover happens until it is back")
