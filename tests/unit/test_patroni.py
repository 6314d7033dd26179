"""`dbc.ha: patroni` in spec, plan and render (no Docker): the services, Patroni's settings, the router's
file, the apps' settings, and what `scale dbc=N` changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from deploystack.errors import SpecError
from deploystack.plan import build_plan
from deploystack.plan import patroni as p
from deploystack.plan.model import ProjectPlan
from deploystack.plan.secrets import secret_names
from deploystack.render.project import config_text
from deploystack.spec import Stack, load_stack
from tests.conftest import write_spec

SPEC = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
dbc:
  ha: patroni
  replicas: {replicas}
  synchronous: {synchronous}
"""


def stack_of(folder: Path, replicas: int = 2, synchronous: bool = True) -> Stack:
    text = SPEC.format(replicas=replicas, synchronous=str(synchronous).lower())
    return load_stack(write_spec(folder, text))


def load_yaml(text: str) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return data


def rendered(plan: ProjectPlan, path: str) -> str:
    return config_text(next(c for c in plan.configs if c.path == path))


def test_services_are_etcd_members_patroni_nodes_and_the_router(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path, replicas=2))
    names = [s.name for s in plan.services]
    assert [n for n in names if n.startswith(("etcd-", "db-"))] == [
        "etcd-1", "etcd-2", "etcd-3", "db-node-1", "db-node-2", "db-node-3", "db-router"]
    assert "db-primary" not in names
    node = plan.service("db-node-2")
    env = dict(node.environment)
    assert env["PATRONI_NAME"] == "db-node-2"
    assert env["PATRONI_SUPERUSER_PASSWORD"] == "${DB_SUPERUSER_PASSWORD}"  # a secret, never in a file
    assert node.depends_on == ("etcd-1", "etcd-2", "etcd-3") and node.ports == ()
    assert node.build is not None and dict(node.build.args)["BASE_IMAGE"] == "deploystack/base:trixie"
    assert {"etcd-1-data", "db-node-3-data"} <= set(plan.volumes)
    assert {"DB_SUPERUSER_PASSWORD", "PATRONI_RESTAPI_PASSWORD"} <= set(secret_names(stack_of(tmp_path)))
    members = dict(plan.service("etcd-3").environment)["ETCD_INITIAL_CLUSTER"]
    assert members == "etcd-1=http://etcd-1:2380,etcd-2=http://etcd-2:2380,etcd-3=http://etcd-3:2380"


def test_patroni_yml_is_yaml_with_failover_settings_patroni_accepts(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path, synchronous=True))
    text = rendered(plan, "config/patroni/patroni.yml")
    config: dict[str, Any] = load_yaml(text)
    dcs = config["bootstrap"]["dcs"]
    assert dcs["ttl"] >= 20  # Patroni raises a smaller ttl to 20
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]  # Patroni's own rule
    assert dcs["failsafe_mode"] is True and dcs["synchronous_mode"] is True
    assert dcs["postgresql"]["use_pg_rewind"] is True
    parameters = dcs["postgresql"]["parameters"]
    # Quoted: Patroni reads YAML 1.1 (PyYAML), where a bare `on` is true.
    assert parameters["wal_log_hints"] == "on" and "wal_log_hints: 'on'" in text
    assert config["postgresql"]["authentication"]["replication"]["username"] == "replicator"
    assert "password:" not in text  # passwords come from the environment only
    assert config["etcd3"]["hosts"] == ["etcd-1:2379", "etcd-2:2379", "etcd-3:2379"]
    assert config["postgresql"]["bin_dir"] == "/usr/lib/postgresql/17/bin"
    asynchronous = load_yaml(rendered(build_plan(stack_of(tmp_path, synchronous=False)),
                                           "config/patroni/patroni.yml"))
    assert asynchronous["bootstrap"]["dcs"]["synchronous_mode"] is False


def test_the_router_checks_each_node_on_patronis_rest_api(tmp_path: Path) -> None:
    text = rendered(build_plan(stack_of(tmp_path, replicas=1)), "config/db-router/haproxy.cfg")
    assert "option httpchk OPTIONS /primary" in text and "option httpchk OPTIONS /replica" in text
    for node in ("db-node-1", "db-node-2"):
        assert text.count(f"server {node} {node}:5432 check port 8008") == 2  # leader and standbys
    assert "db-node-3" not in text
    assert "bind :5432" in text and "bind :5433" in text
    assert "on-marked-down shutdown-sessions" in text and "init-addr none" in text


def test_apps_reach_the_router_only(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path))
    app = plan.service("backend")
    env = dict(app.environment)
    assert (env["DB_HOST"], env["DB_PORT"], env["DB_REPLICAS"], env["DB_TARGET_SESSION_ATTRS"]) == (
        "db-router", "5432", "db-router:5433", "read-write")
    assert "db-router" in app.depends_on and not any(d.startswith("db-node") for d in app.depends_on)
    no_standby = dict(build_plan(stack_of(tmp_path / "one", replicas=0)).service("backend").environment)
    assert no_standby["DB_REPLICAS"] == ""


def test_scaling_dbc_changes_neither_the_apps_nor_the_nodes_nor_the_router_service(tmp_path: Path) -> None:
    small, large = build_plan(stack_of(tmp_path, replicas=1)), build_plan(stack_of(tmp_path, replicas=2))
    for name in ("backend", "backend-migrate", "db-node-1", "db-node-2", "db-router", "lbc"):
        assert small.service(name) == large.service(name), name
    assert rendered(small, "config/patroni/patroni.yml") == rendered(large, "config/patroni/patroni.yml")
    assert rendered(small, "config/db-router/haproxy.cfg") != rendered(large, "config/db-router/haproxy.cfg")
    assert large.service("db-router").reload is not None  # a new node list is a reload, not a restart


def test_the_default_is_unchanged_streaming_replication(tmp_path: Path) -> None:
    stack = load_stack(write_spec(tmp_path, SPEC.split("dbc:")[0]))
    assert (stack.dbc.ha, stack.dbc.synchronous) == ("streaming", False)
    names = [s.name for s in build_plan(stack).services]
    assert "db-primary" in names and not any(n.startswith(("etcd", "db-node", "db-router")) for n in names)


@pytest.mark.parametrize(("dbc", "expected"), [
    ("  synchronous: true\n", "dbc (line 7): synchronous: true needs ha: patroni (streaming replicas are "
                              "asynchronous)"),
    ("  ha: patroni\n  offsite: {name: dr, host: db.example.org, bind: 10.0.0.5}\n",
     "dbc (line 7): offsite is not available with ha: patroni yet: drop one of them"),
    ("  ha: stolon\n", "dbc.ha (line 8): must be one of 'streaming' or 'patroni' (got 'stolon')"),
])
def test_bad_patroni_options_name_the_field(tmp_path: Path, dbc: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, SPEC.split("  ha:")[0] + dbc))
    assert [str(problem) for problem in caught.value.problems] == [expected]


def test_failover_timing_fits_patronis_rules() -> None:
    assert p.TTL >= 20 and p.LOOP_WAIT + 2 * p.RETRY_TIMEOUT <= p.TTL
