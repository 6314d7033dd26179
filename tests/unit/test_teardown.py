"""The order in which `down` stops a project's containers, read from their labels (no Docker: stand-ins that
carry what the engine lists)."""

from __future__ import annotations

from dataclasses import dataclass, field

from deploystack import labels
from deploystack.engine.teardown import depends_on, removal_waves


@dataclass(eq=False)
class Listed:
    """What teardown reads of a listed container."""

    name: str
    status: str = "running"
    labels: dict[str, str] = field(default_factory=dict)


def made(service: str, deps: str | None, status: str = "running", oneoff: bool = False) -> Listed:
    found = {labels.SERVICE: service, labels.ONEOFF: str(oneoff)}
    if deps is not None:
        found[labels.DEPENDS_ON] = deps
    return Listed(f"p-{service}-1", status, found)


def names(waves: list[list[Listed]]) -> list[list[str]]:  # type: ignore[type-arg]
    return [[c.name for c in wave] for wave in waves]


def test_the_label_is_read_as_compose_writes_it() -> None:
    label = "db-primary:service_healthy:false,backend-migrate:service_completed_successfully:false"
    assert depends_on(made("backend", label)) == {"db-primary", "backend-migrate"}  # type: ignore[arg-type]
    assert depends_on(made("redis", "")) == set()  # type: ignore[arg-type]
    assert depends_on(made("redis", None)) is None  # type: ignore[arg-type]


def test_apps_stop_before_their_database_and_what_is_not_running_goes_at_once() -> None:
    containers = [
        made("lbc", "backend:service_healthy:false"),
        made("backend", "db-primary:service_healthy:false,backend-migrate:service_completed_successfully:false"),
        made("backend-migrate", "db-primary:service_healthy:false", status="exited"),
        made("backend", "", oneoff=True),  # a `deploystack run` container: nothing depends on it
        made("db-primary", ""),
    ]
    assert names(removal_waves(containers)) == [  # type: ignore[arg-type]
        ["p-backend-migrate-1", "p-backend-1", "p-lbc-1"], ["p-backend-1"], ["p-db-primary-1"]]


def test_replicas_of_one_service_stop_together() -> None:
    containers = [made("backend", "db:service_healthy:false"), made("db", "")]
    containers.insert(1, Listed("p-backend-2", labels=dict(containers[0].labels)))
    assert names(removal_waves(containers)) == [["p-backend-1", "p-backend-2"], ["p-db-1"]]  # type: ignore[arg-type]


def test_without_the_label_one_at_a_time_in_the_engines_order_as_before() -> None:
    containers = [made("lbc", None), made("migrate", None, status="exited"), made("db", "")]
    assert names(removal_waves(containers)) == [["p-migrate-1"], ["p-lbc-1"], ["p-db-1"]]  # type: ignore[arg-type]
    assert names(removal_waves([])) == []
