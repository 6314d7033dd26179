"""The seed's picture as plain data, computed from a ProjectPlan with no I/O.

Network areas (public, private) hold the role groups (LBC, APC, ...), which hold one node per service;
outside nodes are the clients and the host's Docker engine. Edges say who talks to whom: the published
ports into the LBC, the LBC's routes to the apps, and every other service's depends_on. When all members
of a group depend on the same service (every app and migration job needs the databases, the caches and
the media store), one edge leaves the group instead of one per member.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from deploystack.plan import ProjectPlan, build_plan
from deploystack.plan.cdc import RECEIVER, RUNNER
from deploystack.plan.model import Port, Service
from deploystack.plan.names import PRIMARY, Role, is_replica
from deploystack.spec.models import Stack

# nginx.conf.j2 sends this prefix to the CDC (compose/lbc/templates/nginx.conf.j2, `location /_cdc/`).
CDC_PREFIX = "/_cdc/"
DOCKER_SOCKET = "/var/run/docker.sock"
CLIENT = "client"
DOCKER = "docker"
INTERNET = "internet"

ROLE_TITLES = {
    "lbc": ("LBC", "load balancer"),
    "apc": ("APC", "applications"),
    "acc": ("ACC", "async + cache"),
    "mmc": ("MMC", "media, S3"),
    "dbc": ("DBC", "PostgreSQL"),
    "cdc": ("CDC", "continuous deploy"),
}


class Link(StrEnum):
    """What an edge is: it decides the colour and the line."""

    PUBLIC = "public"  # over the public network (published ports)
    PRIVATE = "private"  # over the private network
    EGRESS = "egress"  # out to the internet through the egress network
    CONTROL = "control"  # the Docker socket: control of the host
    ORDER = "order"  # starts after (a one-shot job), no traffic


@dataclass(frozen=True)
class Node:
    id: str
    title: str  # "backend ×2"
    detail: str = ""  # a second, smaller line
    job: bool = False  # a one-shot job (migrations), drawn dashed


@dataclass(frozen=True)
class Group:
    """One role: LBC, APC, ACC, MMC, DBC or CDC."""

    id: str
    role: str
    title: str
    subtitle: str
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Area:
    """A network drawn as a box around the groups whose services sit on it."""

    network: str
    title: str
    groups: tuple[Group, ...]


@dataclass(frozen=True)
class Edge:
    source: str  # a node id or a group id
    target: str
    label: str
    link: Link


@dataclass(frozen=True)
class Diagram:
    project: str
    areas: tuple[Area, ...]
    outside: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def group(self, group_id: str) -> Group | None:
        return next((g for a in self.areas for g in a.groups if g.id == group_id), None)


def node_id(service: str) -> str:
    """Service names are [a-z0-9-]: '-' -> '_' keeps them apart and valid ids in DOT and Mermaid alike
    (the prefix keeps Mermaid's keyword `end` and leading digits out of the way)."""
    return "svc_" + service.replace("-", "_")


def port_text(port: Port) -> str:
    host = f"[{port.host_ip}]" if ":" in port.host_ip else port.host_ip
    return f"{host}:{port.host_port} → {port.container_port}"


def diagram_of(stack: Stack, plan: ProjectPlan | None = None) -> Diagram:
    plan = plan or build_plan(stack)
    groups = _groups(stack, plan)
    on_public = {s.role for s in plan.services if "public" in s.networks}
    areas = tuple(
        Area(network, title, tuple(g for g in groups if (g.role in on_public) == (network == "public")))
        for network, title in (("public", "public network"), ("private", "private network (internal)"))
    )
    outside = [Node(CLIENT, "internet", "clients, git push webhooks" if stack.cdc.enabled else "clients")]
    if any(m.bind and m.source == DOCKER_SOCKET for s in plan.services for m in s.mounts):
        outside.append(Node(DOCKER, "Docker engine", DOCKER_SOCKET))
    if any("egress" in s.networks for s in plan.services):
        outside.append(Node(INTERNET, "git remotes", "egress network: out only"))
    return Diagram(plan.project, areas, tuple(outside), tuple(_edges(stack, plan, groups)))


def _role(service: Service) -> str:
    """The role box a service goes in: an app's jobs (role apc-job) with the apps."""
    return service.role.split("-")[0]


def _groups(stack: Stack, plan: ProjectPlan) -> list[Group]:
    groups = []
    for role, (title, subtitle) in ROLE_TITLES.items():
        members = [s for s in plan.services if _role(s) == role]
        names = [m.name for m in members]

        def place(service: Service, names: list[str] = names) -> tuple[int, bool]:
            """An app's migration job right after its app; otherwise the plan's order."""
            base = service.name.removesuffix("-migrate") if service.one_shot else service.name
            return names.index(base if base in names else service.name), service.one_shot

        members.sort(key=place)
        if members:
            groups.append(Group(f"role_{role}", role, title, subtitle,
                                tuple(_node(stack, s) for s in members)))
    return groups


def _node(stack: Stack, service: Service) -> Node:
    if service.one_shot:
        return Node(node_id(service.name), service.name, "one-shot job", job=True)
    title = f"{service.name} ×{service.replicas}" if service.scalable else service.name
    detail = service.image or ""
    if service.role == Role.APC and service.name in stack.apc.apps:
        detail = stack.apc.apps[service.name].server
    elif service.role == Role.LBC:
        detail = "nginx + fail2ban" if stack.lbc.fail2ban.enabled else "nginx"
    elif service.role == Role.MMC and service.build is not None:
        detail = stack.mmc.backend
    elif service.role == Role.CDC:
        detail = f"webhook → queue ({stack.cdc.branch})"
    elif service.role == Role.CDC_RUNNER:
        detail = "queue → deploy"
    return Node(node_id(service.name), title, detail)


def _edges(stack: Stack, plan: ProjectPlan, groups: list[Group]) -> list[Edge]:
    edges = []
    for service in plan.services:
        for port in service.ports:
            edges.append(Edge(CLIENT, node_id(service.name), port_text(port), Link.PUBLIC))
    for service in plan.services:
        if service.role != Role.LBC:
            continue
        for dep in service.depends_on:
            app = stack.apc.apps.get(dep)
            label = ", ".join(app.routes) if app is not None else CDC_PREFIX if dep == RECEIVER else ""
            edges.append(Edge(node_id(service.name), node_id(dep), label, Link.PRIVATE))
    edges += _dependency_edges(plan, groups)
    for service in plan.services:
        if any(m.bind and m.source == DOCKER_SOCKET for m in service.mounts):
            edges.append(Edge(node_id(service.name), DOCKER, "socket: root on the host", Link.CONTROL))
        if "egress" in service.networks:
            edges.append(Edge(node_id(service.name), INTERNET, "fetch sources", Link.EGRESS))
    return edges


def _dependency_edges(plan: ProjectPlan, groups: list[Group]) -> list[Edge]:
    """depends_on of every service but the LBC (its routes say more), one edge per group where shared."""
    by_name = {s.name: s for s in plan.services}
    edges: list[Edge] = []
    for group in groups:
        if group.role == Role.LBC:
            continue
        members = [s for s in plan.services if node_id(s.name) in {n.id for n in group.nodes}]
        inside = {s.name for s in members}
        shared: set[str] = set()
        if len(members) > 1:
            shared = set.intersection(*(set(s.depends_on) for s in members)) - inside
        for dep in (d for d in members[0].depends_on if d in shared):
            edges.append(Edge(group.id, node_id(dep), _traffic(dep), Link.PRIVATE))
        for service in members:
            for dep in service.depends_on:
                if dep in shared:
                    continue
                if by_name[dep].one_shot:
                    edges.append(Edge(node_id(service.name), node_id(dep), "after", Link.ORDER))
                else:
                    label = "replication" if service.role == Role.DBC and dep == PRIMARY else _traffic(dep)
                    edges.append(Edge(node_id(service.name), node_id(dep), label, Link.PRIVATE))
    return edges


def _traffic(dep: str) -> str:
    """The Django router sends writes to the primary and reads to the replicas."""
    if dep == PRIMARY:
        return "writes"
    if dep == RUNNER:
        return "queue (volume)"
    return "reads" if is_replica(dep) else ""
