"""The one replica-replace strategy (engine/replace.py), against a fake engine: the order of its steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest

from deploystack.engine.containers import ContainerSpec
from deploystack.engine.replace import PARKED, replace_replica
from deploystack.engine.report import Silent
from deploystack.errors import StackError
from deploystack.plan.model import Service
from deploystack.plan.names import Role
from tests.unit.test_lbc import blueprint as blueprint  # the fixture
from tests.unit.test_lbc import rendered_of


class FakeContainer:
    def __init__(self, engine: FakeEngine, name: str, status: str = "running", health: str = "healthy") -> None:
        self.engine = engine
        self.name = name
        self.status = status
        self.attrs: dict[str, Any] = {"State": {"Status": status, "Health": {"Status": health}}, "RestartCount": 0}

    def rename(self, name: str) -> None:
        self.engine.log.append(f"rename {self.name} {name}")
        del self.engine.by_name[self.name]
        self.name = name
        self.engine.by_name[name] = self

    def stop(self, timeout: int) -> None:
        self.engine.log.append(f"stop {self.name} {timeout}")
        self.status = "exited"

    def remove(self, force: bool, v: bool) -> None:
        self.engine.log.append(f"remove {self.name}")
        del self.engine.by_name[self.name]

    def logs(self, tail: int) -> bytes:
        return b"boom"


class FakeEngine:
    def __init__(self) -> None:
        self.by_name: dict[str, FakeContainer] = {}
        self.log: list[str] = []
        self.containers = self

    def get(self, name: str) -> FakeContainer:
        if name not in self.by_name:
            raise docker.errors.NotFound(name)
        return self.by_name[name]

    def add(self, name: str, status: str = "running", health: str = "healthy") -> FakeContainer:
        self.by_name[name] = FakeContainer(self, name, status, health)
        return self.by_name[name]


SERVICE = Service(name="web", role=Role.APC, build=None, image="web", stop_grace_s=7)
SPEC = ContainerSpec(service=SERVICE, number=1, name="p-web-1", image="web:2", environment={}, config_hash="h2",
                     labels={})


def run(engine: FakeEngine, health: str = "healthy") -> None:
    def create(spec: ContainerSpec) -> None:
        engine.log.append(f"create {spec.name}")
        engine.add(spec.name, health=health)

    replace_replica(engine, SPEC, Silent(), create=create,  # type: ignore[arg-type]
                    reload=lambda: engine.log.append("reload"))


def test_the_running_replica_serves_until_its_successor_is_healthy_and_the_lbc_reloaded() -> None:
    engine = FakeEngine()
    engine.add("p-web-1")
    run(engine)
    assert engine.log == ["rename p-web-1 p-web-1" + PARKED, "create p-web-1", "reload",
                          "stop p-web-1-old 7", "remove p-web-1-old"]
    assert list(engine.by_name) == ["p-web-1"]


def test_a_stopped_replica_is_removed_first_and_a_leftover_parked_one_goes() -> None:
    engine = FakeEngine()
    engine.add("p-web-1", status="exited")
    engine.add("p-web-1-old")
    run(engine)
    assert engine.log == ["remove p-web-1", "stop p-web-1-old 7", "remove p-web-1-old", "create p-web-1", "reload"]


def test_a_failing_successor_is_removed_and_the_old_replica_gets_its_name_back() -> None:
    engine = FakeEngine()
    old = engine.add("p-web-1")
    with pytest.raises(StackError, match="p-web-1 is unhealthy"):
        run(engine, health="unhealthy")
    assert engine.log == ["rename p-web-1 p-web-1-old", "create p-web-1", "stop p-web-1 0", "remove p-web-1",
                          "rename p-web-1-old p-web-1"]
    assert engine.by_name == {"p-web-1": old} and old.status == "running"


class _Created:
    def start(self) -> None:
        pass


class _PrunedOnce:
    """An engine whose image was removed (pruned) since it was built: the first create finds no image."""

    def __init__(self) -> None:
        self.creates: list[str] = []
        self.containers = self
        self.networks = self
        self.api = type("Api", (), {"_version": "1.45"})()

    def create(self, image: str, **options: Any) -> _Created:
        self.creates.append(image)
        if len(self.creates) == 1:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        return _Created()

    def get(self, name: str) -> Any:
        return type("Net", (), {"connect": lambda *a, **k: None})()


def test_an_image_pruned_between_build_and_create_is_built_again_once(blueprint: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from deploystack.engine import apply
    from deploystack.engine.containers import wanted_specs

    rendered = rendered_of(blueprint, tmp_path)
    service = rendered.plan.service("lbc")
    (spec,) = wanted_specs(rendered, service)
    built: list[str] = []
    monkeypatch.setattr(apply.images, "build_images", lambda client, r, report: built.append(r.plan.project) or [])
    engine = _PrunedOnce()
    apply.create_container(engine, rendered, spec, Silent())  # type: ignore[arg-type]
    assert engine.creates == [spec.image, spec.image] and built == [rendered.plan.project]
