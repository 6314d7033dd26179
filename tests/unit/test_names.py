"""plan/names.py: every derived name, and its parsing back, in one place."""

from __future__ import annotations

import pytest

from deploystack.plan import names
from deploystack.plan.names import Role
from deploystack.plan.project import build_plan
from deploystack.spec import load_stack
from tests.conftest import REPO


def test_engine_names_are_compose_names() -> None:
    assert names.network_name("shop", "private") == "shop_private"
    assert names.volume_name("shop", names.data_volume(names.PRIMARY)) == "shop_db-primary-data"
    assert names.container_name("shop", "backend", 2) == "shop-backend-2"
    assert names.unscoped("shop", "shop_lbc") == "lbc"


def test_replicas_slots_and_aliases_round_trip() -> None:
    replicas = names.replica_names(2)
    assert replicas == ["db-replica-1", "db-replica-2"]
    assert [names.slot_name(r) for r in replicas] == ["replica_1", "replica_2"]
    assert [names.replica_of_alias(names.slot_name(r)) for r in replicas] == replicas
    assert names.is_replica("db-replica-3") and not names.is_replica(names.PRIMARY)


@pytest.mark.parametrize(("volume", "replica"), [
    ("shop_db-replica-12-data", "db-replica-12"),
    ("shop_db-primary-data", None),
    ("other_db-replica-1-data", None),
    ("shop_db-replica-1-data-before-promote-1", None),
])
def test_a_replica_is_read_back_from_its_volume(volume: str, replica: str | None) -> None:
    assert names.replica_of_volume("shop", volume) == replica


def test_every_service_of_the_default_blueprint_has_a_role_and_its_label_is_the_bare_value() -> None:
    plan = build_plan(load_stack(REPO / "blueprints" / "default" / "deploystack.yaml"))
    assert {s.role for s in plan.services} <= set(Role)
    assert all(isinstance(s.role, Role) for s in plan.services)
    assert {s.role.value for s in plan.services} >= {"lbc", "apc", "dbc"}
