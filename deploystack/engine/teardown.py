"""Stopping and removing containers: one, or a whole project's in reverse dependency order, each wave at once.

`down` used to stop a project's containers one after the other; the time it took was the sum of every
container's own shutdown. Services that do not depend on each other stop together now (converge.stop_waves),
so it is the longest shutdown of each wave instead, and the order still keeps the database and etcd up for
as long as something that writes to them runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import docker
import docker.errors
from docker.models.containers import Container

from deploystack import labels
from deploystack.engine.client import engine_errors
from deploystack.engine.converge import stop_waves
from deploystack.engine.lookup import is_oneoff
from deploystack.engine.report import Reporter

DOWN_GRACE_S = 20  # seconds between a container's stop signal and its SIGKILL, in `down`
PARALLEL = 8  # containers stopped (and volumes removed) at once: the engine does the work, not this process

Item = TypeVar("Item")


def stop_and_remove(container: Container, grace: int) -> None:
    """Stop (its own stop signal, then `grace` seconds) and remove, anonymous volumes included; a
    container that went away meanwhile is fine."""
    with contextlib.suppress(docker.errors.NotFound):
        if container.status == "running":
            container.stop(timeout=grace)
        container.remove(force=True, v=True)


def in_parallel(items: Iterable[Item], work: Callable[[Item], None]) -> None:
    """`work(item)` for every item, up to PARALLEL at once; every item is tried, then the first failure
    (in the items' order) is raised."""
    todo = list(items)
    if len(todo) <= 1:
        for item in todo:
            work(item)
        return
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(todo))) as pool:
        futures = [pool.submit(work, item) for item in todo]
    for future in futures:
        future.result()


def depends_on(container: Container) -> set[str] | None:
    """The services a container's service depends on, from Compose's label; None for a container made
    before deploystack wrote that label."""
    value = container.labels.get(labels.DEPENDS_ON)
    if value is None:
        return None
    return {entry.split(":", 1)[0] for entry in value.split(",") if entry}


def removal_waves(containers: Sequence[Container]) -> list[list[Container]]:
    """The containers of a project in the order to stop them: first the one-off containers and those not
    running (nothing to stop), with the services nothing depends on; then each wave of converge.stop_waves.
    When a running container has no dependency label (made by an older deploystack), one at a time in the
    engine's order (newest first), as before."""
    running = [c for c in containers if c.status == "running" and not is_oneoff(c)]
    idle = [c for c in containers if c not in running]
    graph: dict[str, set[str]] = {}
    for container in running:
        deps = depends_on(container)
        if deps is None:
            return [idle, *([c] for c in running)] if idle else [[c] for c in running]
        graph.setdefault(container.labels.get(labels.SERVICE, ""), set()).update(deps)
    waves = [[c for c in running if c.labels.get(labels.SERVICE, "") in wave] for wave in stop_waves(graph)]
    if not waves:
        return [idle] if idle else []
    waves[0] = idle + waves[0]
    return waves


def remove_project_containers(containers: Sequence[Container], report: Reporter, grace: int = DOWN_GRACE_S) -> None:
    """Stop and remove `containers` (a project's, one-offs included) wave by wave (removal_waves)."""
    for wave in removal_waves(containers):
        for container in wave:
            report.step(f"removing {container.name}")

        def remove(container: Container) -> None:
            with engine_errors(f"removing {container.name}"):
                stop_and_remove(container, grace)

        in_parallel(wave, remove)
