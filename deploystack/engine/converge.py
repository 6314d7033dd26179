"""Pure convergence planning: wanted containers vs observed ones -> actions. No Docker here.

Like Compose v1's convergence_plan: each wanted container is created, recreated (its config hash
changed), started (stopped but current) or left alone; containers nobody wants are removed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    CREATE = "create"
    RECREATE = "recreate"
    START = "start"
    NOOP = "noop"
    REMOVE = "remove"


@dataclass(frozen=True)
class Wanted:
    service: str
    number: int
    name: str
    config_hash: str
    one_shot: bool = False


@dataclass(frozen=True)
class Observed:
    id: str
    service: str
    number: int
    name: str
    config_hash: str
    status: str  # docker's State.Status: running, exited, created, ...
    exit_code: int = 0


@dataclass(frozen=True)
class Step:
    action: Action
    service: str
    number: int
    name: str
    wanted: Wanted | None
    observed: Observed | None


def plan_service(wanted: list[Wanted], observed: list[Observed]) -> list[Step]:
    """Steps for one service; removals (replicas beyond the wanted count) come last."""
    by_number = {o.number: o for o in observed}
    steps: list[Step] = []
    for want in wanted:
        have = by_number.pop(want.number, None)
        if have is None:
            action = Action.CREATE
        elif have.config_hash != want.config_hash or have.name != want.name:
            action = Action.RECREATE
        elif want.one_shot:
            # A finished job with the current config is done; a failed one runs again.
            action = Action.NOOP if have.status == "exited" and have.exit_code == 0 else Action.RECREATE
        elif have.status != "running":
            action = Action.START
        else:
            action = Action.NOOP
        steps.append(Step(action, want.service, want.number, want.name, want, have))
    for number in sorted(by_number):
        have = by_number[number]
        steps.append(Step(Action.REMOVE, have.service, number, have.name, None, have))
    return steps


def orphans(wanted_services: set[str], observed: list[Observed]) -> list[Step]:
    """Containers of services the plan no longer has (an app removed from the spec)."""
    return [Step(Action.REMOVE, o.service, o.number, o.name, None, o)
            for o in observed if o.service not in wanted_services]


@dataclass(frozen=True)
class NodeRoll:
    """A rolling replacement of Patroni nodes: `standbys` one at a time (each streaming again before the
    next goes), then, if the leader is to be replaced too, a switchover and the old leader last."""

    standbys: tuple[str, ...]
    leader: str | None


def roll_nodes(to_replace: Collection[str], leader: str | None, streaming: Collection[str]) -> NodeRoll | None:
    """The order in which to replace the running Patroni nodes `to_replace`, or None when a rolling
    replacement keeps nothing up (nothing to replace, no leader, or a leader with no streaming standby
    to hand over to): then they are replaced together, as any other service.

    Standbys that are not streaming (serving no one) go first, like app replicas that are not serving."""
    if not to_replace or leader is None:
        return None
    standbys = sorted((n for n in to_replace if n != leader), key=lambda n: (n in streaming, n))
    if leader not in to_replace:
        return NodeRoll(tuple(standbys), None)
    if not any(n != leader for n in streaming):
        return None
    return NodeRoll(tuple(standbys), leader)


def roll_members(to_replace: Collection[str], running: Collection[str], members: int) -> tuple[str, ...] | None:
    """The order in which to replace etcd members `to_replace` one at a time (each healthy again, so back
    in the quorum, before the next goes), or None when replacing one would leave no quorum (too few
    members running): then they are replaced together, as any other service.

    Stopped members go first (they serve no one, and each one back makes room for the next)."""
    if not to_replace:
        return None
    quorum = members // 2 + 1
    if len(set(running) | set(to_replace)) < quorum + 1:
        return None
    return tuple(sorted(to_replace, key=lambda m: (m in running, m)))


def stop_waves(depends_on: Mapping[str, Collection[str]]) -> list[list[str]]:
    """The order in which `down` stops a project's services (`depends_on`: each service's dependencies): the
    order `up` starts them in, reversed, so a service stops only once everything that depends on it has (the
    LBC first, the apps before their database, Patroni's nodes before etcd, whose store they write to as they
    leave), and as late as that allows. The services of one wave stop together. Dependencies outside
    `depends_on` do not count; a cycle (none is planned) stops with what depends on it."""
    level: dict[str, int] = {}  # the wave `up` would start a service in
    while len(level) < len(depends_on):
        known = dict(level)
        for service, deps in depends_on.items():
            inside = [dep for dep in deps if dep in depends_on and dep != service]
            if service not in level and all(dep in known for dep in inside):
                level[service] = 1 + max((known[dep] for dep in inside), default=-1)
        if len(level) == len(known):  # a cycle: what is left starts last, so it stops first
            top = 1 + max(level.values(), default=-1)
            level |= {service: top for service in depends_on if service not in level}
    return [sorted(s for s in level if level[s] == n) for n in sorted(set(level.values()), reverse=True)]
