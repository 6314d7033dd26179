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
from deploystack.plan.model import Network, ProjectPlan
from deploystack.plan.secrets import secret_names
from deploystack.render.compose import compose_data
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


def test_only_the_etcd_members_and_the_nodes_are_on_the_stores_network(tmp_path: Path) -> None:
    """etcd has no TLS and no authentication: whoever reaches it can rewrite Patroni's configuration (an
    archive_command runs on every node) or delete the leader key. So it is on `dcs` alone, with the nodes."""
    from tests.unit.test_backups import stack_of as with_backups  # the backup service too

    for plan in (build_plan(stack_of(tmp_path)), build_plan(with_backups(tmp_path / "backups")),
                 build_plan(stack_of(tmp_path), swarm=True)):
        assert Network(p.DCS_NETWORK, internal=True) in plan.networks
        on_dcs = {s.name for s in plan.services if p.DCS_NETWORK in s.networks}
        nodes = {s.name for s in plan.services if s.name.startswith("db-node-")}
        assert nodes and on_dcs == {"etcd-1", "etcd-2", "etcd-3", *nodes}
        for service in plan.services:
            if service.name.startswith("etcd-"):
                assert service.networks == (p.DCS_NETWORK,), service.name  # not on private: no app
            elif service.name.startswith("db-node-"):
                # private first: the router, the backup service and the restore one-offs reach them there
                assert service.networks == ("private", p.DCS_NETWORK), service.name
    assert "backup" in {s.name for s in build_plan(with_backups(tmp_path / "backups")).services}
    plan = build_plan(stack_of(tmp_path))
    compose = compose_data(plan, {s.name: f"{s.name}:tag" for s in plan.services})
    assert compose["networks"][p.DCS_NETWORK] == {"internal": True}
    assert compose["services"]["etcd-1"]["networks"] == {p.DCS_NETWORK: {}}
    assert compose["services"]["db-node-1"]["networks"] == {"private": {}, p.DCS_NETWORK: {}}
    # Every member is still named by its service name: peers, clients and Patroni's hosts resolve on dcs.
    assert dict(plan.service("etcd-2").environment)["ETCD_ADVERTISE_CLIENT_URLS"] == "http://etcd-2:2379"
    streaming = build_plan(load_stack(write_spec(tmp_path / "streaming", SPEC.split("dbc:")[0])))
    assert p.DCS_NETWORK not in {n.name for n in streaming.networks}


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
    ("  ha: stolon\n", "dbc.ha (line 8): must be one of 'streaming' or 'patroni' (got 'stolon')"),
])
def test_bad_patroni_options_name_the_field(tmp_path: Path, dbc: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, SPEC.split("  ha:")[0] + dbc))
    assert [str(problem) for problem in caught.value.problems] == [expected]


def test_failover_timing_fits_patronis_rules() -> None:
    assert p.TTL >= 20 and p.LOOP_WAIT + 2 * p.RETRY_TIMEOUT <= p.TTL


def dynamic_of(folder: Path, synchronous: bool = True, extra: str = "") -> dict[str, object]:
    text = SPEC.format(replicas=2, synchronous=str(synchronous).lower()) + extra
    return p.planned_dynamic_config(build_plan(load_stack(write_spec(folder, text))))


def test_a_cluster_made_with_the_same_spec_needs_no_change(tmp_path: Path) -> None:
    wanted = dynamic_of(tmp_path)
    # As Patroni's GET /config returns it: JSON, booleans and numbers as it was given them.
    assert p.config_changes(wanted, wanted) == []
    params = dict(wanted["postgresql"]["parameters"])  # type: ignore[index]
    as_strings = {**wanted, "postgresql": {**wanted["postgresql"],  # type: ignore[dict-item]
                                           "parameters": {k: str(v) for k, v in params.items()}}}
    assert p.config_changes(as_strings, wanted) == []


def test_changed_settings_are_set_as_json_and_dropped_archiving_is_removed(tmp_path: Path) -> None:
    made = dynamic_of(tmp_path / "a", synchronous=False,
                      extra="  backups: {full: daily}\n")
    wanted = dynamic_of(tmp_path / "b", synchronous=True, extra="  max_connections: 150\n")
    changes = p.config_changes(made, wanted)
    assert "synchronous_mode=true" in changes
    assert "postgresql.parameters.max_connections=150" in changes
    assert {"postgresql.parameters.archive_mode=null", "postgresql.parameters.archive_command=null",
            "postgresql.parameters.archive_timeout=null"} <= set(changes)
    # A stack that adds backups gets archiving; a string that YAML would read otherwise stays a string.
    added = p.config_changes(wanted, made)
    assert 'postgresql.parameters.archive_mode="on"' in added
    assert any(c.startswith('postgresql.parameters.archive_command="pgbackrest ') for c in added)
    # Settings someone added by hand stay; slots are slot_changes' business.
    by_hand = {**wanted, "slots": {"x": {"type": "physical"}}, "postgresql": {
        **wanted["postgresql"], "parameters": {**wanted["postgresql"]["parameters"],  # type: ignore[dict-item]
                                               "work_mem": "64MB"}}}
    assert p.config_changes(by_hand, wanted) == []


class FakeNetwork:
    def __init__(self, name: str, joined: list[tuple[str, str, list[str]]]) -> None:
        self.name, self.joined = name, joined

    def connect(self, container: Any, aliases: list[str]) -> None:
        self.joined.append((container.name, self.name, aliases))


class FakeClient:
    """containers.list and networks.get, as Converger._join_new_networks uses them."""

    def __init__(self, containers: list[Any]) -> None:
        self.joined: list[tuple[str, str, list[str]]] = []
        self.found = containers
        self.containers, self.networks = self, self

    def list(self, all: bool, filters: dict[str, str]) -> list[Any]:  # noqa: A002 (docker-py's name)
        return self.found

    def get(self, name: str) -> FakeNetwork:
        return FakeNetwork(name, self.joined)


def test_running_members_and_nodes_join_the_stores_network_before_they_are_replaced(tmp_path: Path) -> None:
    """A stack made before etcd had `dcs`: the members and nodes are replaced one at a time, so the old ones
    join `dcs` first (the new ones are on it alone, or too), keeping `private` until they are replaced."""
    from types import SimpleNamespace

    from deploystack.engine.apply import Converger
    from deploystack.engine.report import Silent

    plan = build_plan(stack_of(tmp_path, replicas=1))

    def container(service: str, status: str, *networks: str) -> SimpleNamespace:
        return SimpleNamespace(name=f"shop-{service}-1", status=status,
                               labels={"com.docker.compose.service": service},
                               attrs={"NetworkSettings": {"Networks": {f"shop_{n}": {} for n in networks}}})

    client = FakeClient([
        container("etcd-1", "running", "private"), container("etcd-2", "running", "dcs"),  # made before; new
        container("etcd-3", "exited", "private"),  # stopped: recreated anyway, nothing to reach
        container("db-node-1", "running", "private"), container("db-node-2", "running", "private", "dcs"),
        container("backend", "running", "private"), container("db-router", "running", "private"),
    ])
    Converger(client, SimpleNamespace(plan=plan), Silent())._join_new_networks()  # type: ignore[arg-type]
    assert client.joined == [("shop-etcd-1-1", "shop_dcs", ["etcd-1"]), ("shop-db-node-1-1", "shop_dcs", ["db-node-1"])]
