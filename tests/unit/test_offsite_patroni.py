"""The offsite replica on a Patroni stack (dbc.ha: patroni with dbc.offsite): the proxy that publishes the
leader, the permanent slot, TLS on every node, pg_hba, the role `up` makes, and the exported folder."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from deploystack import dbparse as db
from deploystack.doctor import listeners
from deploystack.operations import Session, Target
from deploystack.operations.export import export_replica
from deploystack.operations.stack import generate
from deploystack.plan import build_plan
from deploystack.plan import patroni as p
from deploystack.plan.model import ProjectPlan
from deploystack.plan.tenancy import provision_sql
from deploystack.render.envfile import read_env
from deploystack.spec import load_stack
from tests.conftest import write_spec
from tests.unit.test_offsite import REPLICATION, SLOTS
from tests.unit.test_patroni import SPEC, load_yaml, rendered

OFFSITE = SPEC.format(replicas=1, synchronous="false") + """\
  offsite:
    name: dr
    host: db.example.org
    bind: 192.0.2.10
    port: 15432
"""


def plan_of(folder: Path, text: str = OFFSITE) -> ProjectPlan:
    return build_plan(load_stack(write_spec(folder, text)))


def patroni_yml(plan: ProjectPlan) -> dict[str, object]:
    return load_yaml(rendered(plan, "config/patroni/patroni.yml"))


def test_the_proxy_alone_publishes_the_leader_on_bind(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    proxy = plan.service("db-offsite")
    assert [(x.host_ip, x.host_port, x.container_port) for x in proxy.ports] == [("192.0.2.10", 15432, 5432)]
    assert proxy.networks == ("offsite", "private")
    assert {n.name: n.internal for n in plan.networks}["offsite"] is False
    assert all(s.ports == () for s in plan.services if s.name not in ("db-offsite", "lbc"))
    # The router's image (no build of its own), and the apps' router untouched.
    assert proxy.build == plan.service("db-router").build
    assert plan.service("db-router") == plan_of(tmp_path / "plain", SPEC.format(replicas=1, synchronous="false")
                                                ).service("db-router")
    cfg = rendered(plan, "config/db-offsite/haproxy.cfg")
    assert "OPTIONS /primary" in cfg and "/replica" not in cfg and "bind :5433" not in cfg
    assert cfg.count("server db-node-") == 2
    # The apps' router renders as before: reads and writes.
    router = rendered(plan, "config/db-router/haproxy.cfg")
    assert "bind :5433" in router and "OPTIONS /replica" in router


def test_patroni_keeps_a_permanent_slot_and_every_node_serves_tls(tmp_path: Path) -> None:
    config = patroni_yml(plan_of(tmp_path))
    assert config["bootstrap"]["dcs"]["slots"] == {"offsite_dr": {"type": "physical"}}  # type: ignore[index]
    assert config["bootstrap"]["dcs"]["postgresql"]["use_slots"] is True  # type: ignore[index]
    local = config["postgresql"]["parameters"]  # type: ignore[index]
    assert (local["ssl"], local["ssl_cert_file"], local["max_slot_wal_keep_size"]) == (
        "on", "/run/postgresql/tls/server.crt", p.MAX_SLOT_WAL_KEEP_SIZE)
    assert p.planned_dynamic_config(plan_of(tmp_path)).get("slots") == {"offsite_dr": {"type": "physical"}}


def test_without_offsite_a_patroni_stack_is_as_before(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, SPEC.format(replicas=1, synchronous="false"))
    config = patroni_yml(plan)
    assert "slots" not in config["bootstrap"]["dcs"]  # type: ignore[index]
    assert "ssl" not in config["postgresql"]["parameters"]  # type: ignore[index]
    assert "db-offsite" not in {s.name for s in plan.services} and p.planned_dynamic_config(plan).get("slots", {}) == {}
    assert plan.tenancy is not None and plan.tenancy.replication_roles == ()
    assert not any("offsite" in line for line in config["postgresql"]["pg_hba"])  # type: ignore[index]


def test_pg_hba_admits_only_the_offsite_role_over_tls_from_the_proxy(tmp_path: Path) -> None:
    hba = patroni_yml(plan_of(tmp_path))["postgresql"]["pg_hba"]  # type: ignore[index]
    proxy = "shop-db-offsite-1.shop_private"
    assert hba[2:5] == [f"hostssl replication offsite_dr {proxy} scram-sha-256",
                        f"host replication all {proxy} reject",
                        f"host all all {proxy} reject"]
    # Before the lines that admit the apps and the in-stack replication role from anywhere on the network.
    assert hba.index("host replication replicator all scram-sha-256") > 4
    assert hba.index("host all +deploystack_apps all scram-sha-256") > 4


def test_up_makes_the_offsite_role_with_the_apps_password_from_the_environment(tmp_path: Path) -> None:
    tenancy = plan_of(tmp_path).tenancy
    assert tenancy is not None and tenancy.replication_roles == (("offsite_dr", "OFFSITE_REPLICATION_PASSWORD"),)
    script = provision_sql(tenancy)
    assert "\\getenv pw_replication_offsite_dr OFFSITE_REPLICATION_PASSWORD" in script
    assert ('ALTER ROLE "offsite_dr" WITH LOGIN REPLICATION NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS '
            "NOINHERIT PASSWORD :'pw_replication_offsite_dr';") in script


def test_tls_files_go_to_the_nodes_folder(tmp_path: Path) -> None:
    target = Target.of(write_spec(tmp_path, OFFSITE), None)
    generate(Session(target))
    out = target.output
    assert (out / "config/patroni/tls/server.crt").is_file() and (out / "offsite/ca.crt").is_file()
    assert (out / "config/patroni/tls/server.key").stat().st_mode & 0o777 == 0o600
    assert not (out / "config/db").exists()


def test_export_builds_a_postgresql_17_replica_that_streams_through_the_proxy(tmp_path: Path) -> None:
    target = Target.of(write_spec(tmp_path, OFFSITE), None)
    bundle = tmp_path / "bundle"
    export_replica(Session(target), bundle)
    env = read_env(bundle / "replica.env")
    assert (env["PRIMARY_HOST"], env["PRIMARY_PORT"], env["PRIMARY_SSLMODE"], env["REPLICA_SLOT"]) == (
        "db.example.org", "15432", "verify-full", "offsite_dr")
    assert env["REPLICATION_PASSWORD"] == read_env(target.output / ".env")["OFFSITE_REPLICATION_PASSWORD"]
    assert env["PRIMARY_CONNECT_TIMEOUT"] == "10"  # a reconnect through the proxy never waits on TCP for long
    marks = (bundle / "bundle.env").read_text()
    assert "PG_MAJOR=17" in marks and "BASE_IMAGE=${BASE_IMAGE:-debian:trixie-slim}" in marks
    assert "IMAGE=${IMAGE:-deploystack/db:pg17-" in marks
    compose = YAML(typ="safe").load((bundle / "compose.yaml").read_text())
    assert compose["services"]["replica"]["build"]["args"] == {"BASE_IMAGE": "debian:trixie-slim",
                                                                "PG_MAJOR": "17"}
    assert (bundle / "image/Dockerfile").read_text().count("ARG PG_MAJOR=15") == 1
    assert "PostgreSQL 17" in (bundle / "README.md").read_text()
    assert not list(bundle.rglob("*.key"))
    assert export_replica(Session(target), bundle).any is False


def test_status_reads_the_offsite_replica_and_its_slot_from_the_leader() -> None:
    node, slot = db.offsite_status("offsite_dr", REPLICATION, SLOTS)
    assert (node.container, node.replication, node.slot_health) == ("203.0.113.4", "streaming", "ok")
    assert slot is not None and slot.wal_status == "reserved"
    lost = SLOTS.replace(",t,0/3000000,reserved,0", ",f,,lost,")
    node, slot = db.offsite_status("offsite_dr", "application_name\n", lost)
    assert (node.replication, node.slot_health) == ("not connected", "lost")
    node, slot = db.offsite_status("offsite_dr", None, None)
    assert (node.error, slot) == ("the primary did not answer", None)


def test_doctor_checks_the_proxys_port(tmp_path: Path) -> None:
    listener = next(x for x in listeners(load_stack(write_spec(tmp_path, OFFSITE))) if x.name == "db offsite port")
    assert (listener.address, listener.port, listener.service) == ("192.0.2.10", 15432, "db-offsite")


def test_up_adds_the_offsite_slot_to_patronis_configuration_and_drops_a_stale_one() -> None:
    wanted = {"offsite_dr": {"type": "physical"}}
    assert p.slot_changes({}, wanted) == ["slots.offsite_dr.type=physical"]
    assert p.slot_changes({"offsite_dr": {"type": "physical"}}, wanted) == []
    assert p.slot_changes({"offsite_old": {"type": "physical"}, "someone_elses": {}}, wanted) == [
        "slots.offsite_dr.type=physical", "slots.offsite_old=null"]
    assert p.slot_changes({"offsite_dr": {"type": "physical"}}, {}) == ["slots.offsite_dr=null"]
