"""Container hardening in the plan, compose.yaml, the swarm stack file and the container definitions:
every service drops every capability and gains no privilege, has memory and pids limits and rotated
logs; read-only roots where the role allows; the spec tunes the limits and the rotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploystack.plan import build_plan
from deploystack.plan.model import ProjectPlan
from deploystack.render.compose import compose_data
from deploystack.render.swarm import Settings, stack_data
from deploystack.spec import Stack, load_stack
from tests.conftest import BLUEPRINTS, write_spec
from tests.unit.test_spec import MINIMAL, problems_of

# The capabilities each service adds back (plan/hardening.py says why); none for the apps.
EXPECTED_CAPS = {
    "lbc": {"NET_ADMIN", "NET_BIND_SERVICE", "CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID"},
    "db-primary": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"},
    "db-replica-1": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"},
    "redis": {"CHOWN", "SETUID", "SETGID"},
    "memcached": {"SETUID", "SETGID"},
    "rabbitmq": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"},
    "media": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"},
    "cdc": set(),  # the receiver: a non-root user (its image's USER)
    "cdc-runner": {"CHOWN", "DAC_OVERRIDE", "FOWNER"},
}
APPS = {"backend", "backend-worker", "backend-migrate", "frontend", "frontend-migrate", "bff", "bff-migrate"}
NOT_READ_ONLY = {"lbc", "db-primary", "db-replica-1", "cdc-runner"}


@pytest.fixture(scope="module")
def demo() -> Stack:
    return load_stack(BLUEPRINTS / "default" / "deploystack.yaml")


@pytest.fixture(scope="module")
def plan(demo: Stack) -> ProjectPlan:
    return build_plan(demo)


def compose_services(plan: ProjectPlan) -> dict[str, Any]:
    services: dict[str, Any] = compose_data(plan, {s.name: f"{s.name}:tag" for s in plan.services})["services"]
    return services


def test_every_service_is_hardened_in_compose_yaml(plan: ProjectPlan) -> None:
    services = compose_services(plan)
    assert set(services) == set(EXPECTED_CAPS) | APPS
    for name, service in services.items():
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["cap_drop"] == ["ALL"], name
        assert set(service.get("cap_add", [])) == EXPECTED_CAPS.get(name, set()), name
        assert service["mem_limit"], name
        assert service["pids_limit"] > 0, name
        assert service["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}, name
        assert service.get("read_only", False) is (name not in NOT_READ_ONLY), name


def test_read_only_services_get_tmpfs_for_what_they_write(plan: ProjectPlan) -> None:
    services = compose_services(plan)
    # The apps run as uid 10001: their socket folder is theirs; /tmp holds uploads and nginx's buffers.
    assert services["backend"]["tmpfs"] == ["/run/app:size=16m,mode=0750,uid=10001,gid=10001",
                                            "/tmp:size=256m,mode=1777"]
    assert services["backend-worker"]["tmpfs"] == services["backend"]["tmpfs"]
    assert "/run:size=16m,mode=0755" in services["redis"]["tmpfs"]
    for name, service in services.items():
        if service.get("read_only"):
            assert any(t.startswith("/tmp:") for t in service["tmpfs"]), name


def test_memory_limits_default_for_every_role_and_follow_the_spec(spec_dir: Path) -> None:
    defaults = compose_services(build_plan(load_stack(write_spec(spec_dir, MINIMAL))))
    assert {name: s["mem_limit"] for name, s in defaults.items()} == {
        "db-primary": "1g", "db-replica-1": "1g", "redis": "384m", "memcached": "128m", "rabbitmq": "512m",
        "media": "512m", "backend-migrate": "512m", "backend": "512m", "lbc": "256m"}
    text = MINIMAL + ("      memory: 768m\n      worker: {memory: 300m}\nlbc: {memory: 128m}\n"
                      "dbc: {memory: 2g, max_connections: 200}\ncdc: {enabled: true, memory: 1g}\n"
                      "logging: {max_size: 50m, max_file: 5}\n")
    services = compose_services(build_plan(load_stack(write_spec(spec_dir, text))))
    assert services["backend"]["mem_limit"] == services["backend-migrate"]["mem_limit"] == "768m"
    assert services["backend-worker"]["mem_limit"] == "300m"
    assert (services["lbc"]["mem_limit"], services["db-primary"]["mem_limit"],
            services["cdc-runner"]["mem_limit"], services["cdc"]["mem_limit"]) == ("128m", "2g", "1g", "64m")
    assert services["db-primary"]["pids_limit"] == 200 + 128  # a backend per connection
    assert {str(s["logging"]["options"]) for s in services.values()} == {"{'max-size': '50m', 'max-file': '5'}"}


@pytest.mark.parametrize(("extra", "message"), [
    # sizes are checked by spec/values.py, as every size of the spec is
    ("logging: {max_size: 10x}\n", "logging.max_size (line 7): '10x' is not a size: a number and a unit ('k', 'm', "
                                  "'g'), e.g. 512m or 1g"),
    ("logging: {max_file: 0}\n", "logging.max_file (line 7): must be ≥ 1 (got 0)"),
    ("dbc: {memory: lots}\n", "dbc.memory (line 7): 'lots' is not a size: a number and a unit ('k', 'm', 'g'), "
                             "e.g. 512m or 1g"),
    ("lbc: {memory: 1m}\n", "lbc.memory (line 7): '1m' is out of range: between 6 MiB and 512 GiB"),  # Docker's 6m
])
def test_bad_limits_are_refused_with_their_field(spec_dir: Path, extra: str, message: str) -> None:
    assert problems_of(spec_dir, MINIMAL + extra) == [message]


def test_the_swarm_stack_file_carries_what_a_swarm_applies(demo: Stack) -> None:
    plan = build_plan(demo, swarm=True)
    data = stack_data(plan, {s.name: f"{s.name}:tag" for s in plan.services}, Settings(), {}, {
        name: "x" for name in plan.secrets})
    for name, service in data["services"].items():
        assert service["cap_drop"] == ["ALL"], name
        assert "security_opt" not in service, name  # `docker stack deploy` ignores it: the daemons' setting
        assert service["deploy"]["resources"]["limits"]["pids"] > 0, name
        assert service["logging"]["driver"] == "json-file", name
    backend = data["services"]["backend"]
    assert backend["read_only"] is True
    # tmpfs as mounts (the short `tmpfs:` key is not applied on a swarm), sized in bytes.
    assert {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 256 << 20}} in backend["volumes"]
    assert set(data["services"]["lbc"]["cap_add"]) == EXPECTED_CAPS["lbc"]
