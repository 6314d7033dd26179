"""Replace one app replica with no failed request: the one strategy of `deploy`, `rollback` and `up`.

For the replica `<project>-<app>-<n>`:

1. the running container is renamed `<name>-old` (PARKED): nginx keeps its address from its last reload,
   so it goes on serving;
2. a new container takes the name and must pass its health check;
3. the LBC reloads once (the caller's `reload`, engine/reload.py): its new workers resolve the name to the
   new container, its old workers finish the requests they hold with the old one (bounded wait). One
   reload per replica, because each reload closes the LBC's idle kept-alive client connections, and a
   request sent on one at that instant is lost (docs/cdc.md);
4. the old container stops: its own nginx and app server finish what is in flight.

A new replica that fails its health check is removed, the old container gets its name back (still
serving), and the StackError goes to the caller.

Callers: `Rollout` (engine/rollout.py) for every replica of the app it deploys, changed or not; `Converger`
(engine/apply.py, `_recreate_replica`) for a replica of an app the LBC lists (`Service.upstream`) whose
configuration changed. What `up` does differently, on purpose, is named there and nowhere else:

- removing a replica (`scale` down) is not a replacement: there is no successor to hand over to, so the
  LBC reloads without it first and it stops afterwards (`Converger.leaving`);
- services the LBC does not list (Celery workers, databases, caches, etcd, Patroni's nodes) are removed
  then created: nothing reaches them by a name that an LBC reload re-resolves, so parking buys nothing
  (the nodes and etcd's members have their own order: `converge.roll_nodes`, `converge.roll_members`);
- a container to replace under another name than the wanted one (a renamed service) is removed then
  created: there is no name to hand over;
- the reload between replicas: a deploy's must succeed, while `up`'s may fail when a replica of another
  app, new in the same run, does not exist yet; nginx then keeps its configuration until the LBC's own
  step, which must succeed.
"""

from __future__ import annotations

from collections.abc import Callable

import docker
import docker.errors
from docker.models.containers import Container

from deploystack.engine.client import engine_errors
from deploystack.engine.containers import ContainerSpec
from deploystack.engine.health import wait_ready
from deploystack.engine.report import Reporter
from deploystack.engine.teardown import stop_and_remove
from deploystack.errors import StackError

PARKED = "-old"  # suffix of a replica being replaced, while it still serves


def replace_replica(client: docker.DockerClient, spec: ContainerSpec, report: Reporter,
                    create: Callable[[ContainerSpec], object], reload: Callable[[], object]) -> None:
    """Replace the replica `spec` names with a new container made by `create`; `reload` points the LBC at it."""
    grace = spec.service.stop_grace_s
    old = container(client, spec.name)
    if old is not None and old.status != "running":  # not serving: nothing to hand over
        stop(old, grace)
        old = None
    parked = spec.name + PARKED
    leftover = container(client, parked)  # from a run that was killed half-way
    if leftover is not None:
        stop(leftover, grace)
    if old is not None:
        with engine_errors(f"renaming {spec.name}"):
            old.rename(parked)
    report.step(f"{spec.name}: starting the new replica")
    try:
        create(spec)
        wait_ready(client, spec.name, spec.service, report).wait()
    except StackError:
        new = container(client, spec.name)
        if new is not None:
            stop(new, grace=0)
        if old is not None:
            with engine_errors(f"renaming {parked} back"):
                old.rename(spec.name)
        raise
    reload()
    if old is not None:
        report.step(f"{spec.name}: replaced; stopping the old replica")
        stop(old, grace)


def container(client: docker.DockerClient, name: str) -> Container | None:
    with engine_errors(f"inspecting {name}"):
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            return None


def stop(found: Container, grace: int) -> None:
    with engine_errors(f"removing {found.name}"):
        stop_and_remove(found, grace)
