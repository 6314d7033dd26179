"""The offsite replica (dbc.offsite): what the primary publishes, its TLS files, and the exported folder."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import jsonschema
import pytest
from cryptography import x509
from ruamel.yaml import YAML

from deploystack import dbparse as db
from deploystack.errors import UsageError
from deploystack.operations import Session, Target
from deploystack.operations.export import export_replica
from deploystack.operations.stack import generate
from deploystack.plan import build_plan
from deploystack.plan.dbc import PRIMARY
from deploystack.render.envfile import read_env
from deploystack.spec import load_stack
from deploystack.testing import StackUnderTest
from tests.conftest import BLUEPRINTS, write_spec
from tests.unit.test_render import COMPOSE_SCHEMA
from tests.unit.test_spec import MINIMAL

OFFSITE = MINIMAL + """\
dbc:
  offsite:
    name: dr
    host: db.example.org
    bind: 192.0.2.10
    port: 15432
"""


@pytest.fixture
def spec(spec_dir: Path) -> Path:
    return write_spec(spec_dir, OFFSITE)


def test_without_offsite_the_database_publishes_nothing() -> None:
    plan = build_plan(load_stack(BLUEPRINTS / "default" / "deploystack.yaml"))
    primary = plan.service(PRIMARY)
    assert primary.ports == () and primary.networks == ("private",)
    assert "OFFSITE_REPLICATION_PASSWORD" not in plan.secrets
    assert [n.name for n in plan.networks if n.name == "offsite"] == []


def test_the_primary_publishes_on_bind_only_with_its_own_role(spec: Path) -> None:
    plan = build_plan(load_stack(spec))
    primary = plan.service(PRIMARY)
    assert [(p.host_ip, p.host_port, p.container_port) for p in primary.ports] == [("192.0.2.10", 15432, 5432)]
    assert primary.networks == ("offsite", "private")
    assert {n.name: n.internal for n in plan.networks}["offsite"] is False
    env = dict(primary.environment)
    assert (env["OFFSITE_USER"], env["OFFSITE_PASSWORD"]) == ("offsite_dr", "${OFFSITE_REPLICATION_PASSWORD}")
    assert "OFFSITE_REPLICATION_PASSWORD" in plan.secrets
    assert all(s.ports == () for s in plan.services if s.name not in (PRIMARY, "lbc"))


def test_pg_hba_takes_the_offsite_role_over_tls_only(spec: Path) -> None:
    generate(Session(Target.of(spec, None)))
    hba = [line.split() for line in (spec.parent / "stack/config/db/pg_hba.conf").read_text().splitlines()
           if line and not line.startswith("#")]
    offsite = [rule for rule in hba if "offsite_dr" in rule]
    assert offsite == [["hostssl", "replication", "offsite_dr", "all", "scram-sha-256"],
                       ["hostnossl", "replication", "offsite_dr", "all", "reject"]]
    # The apps' roles and the in-stack replication role: loopback and the private network's containers.
    assert [rule[3] for rule in hba if rule[0] == "host" and rule[2] in ("+deploystack_apps", "replicator")] == [
        "127.0.0.1/32", "127.0.0.1/32", ".shop_private", ".shop_private"]
    conf = (spec.parent / "stack/config/db/postgresql.conf").read_text()
    assert "ssl = on" in conf and "ssl_key_file = '/run/postgresql/tls/server.key'" in conf


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_tls_files_are_private_and_kept_across_regenerations(spec: Path) -> None:
    target = Target.of(spec, None)
    generate(Session(target))
    out = target.output
    files = ["offsite/ca.crt", "offsite/ca.key", "config/db/tls/server.crt", "config/db/tls/server.key"]
    first = {name: (out / name).read_bytes() for name in files}
    assert (_mode(out / "offsite/ca.key"), _mode(out / "config/db/tls/server.key")) == (0o600, 0o600)
    cert = x509.load_pem_x509_certificate(first["config/db/tls/server.crt"])
    ca = x509.load_pem_x509_certificate(first["offsite/ca.crt"])
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["db.example.org"]

    assert generate(Session(target)).any is False  # nothing new: same CA, certificate and keys
    assert {name: (out / name).read_bytes() for name in files} == first

    spec.write_text(OFFSITE.replace("db.example.org", "192.0.2.10"))
    generate(Session(target))
    renewed = x509.load_pem_x509_certificate((out / "config/db/tls/server.crt").read_bytes())
    san = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]
    renewed.verify_directly_issued_by(ca)  # a new host name: a new certificate from the same CA
    assert (out / "offsite/ca.key").read_bytes() == first["offsite/ca.key"]


def test_export_writes_a_self_contained_folder(spec: Path, tmp_path: Path) -> None:
    target = Target.of(spec, None)
    bundle = tmp_path / "bundle"
    export_replica(Session(target), bundle)
    env = read_env(bundle / "replica.env")
    secrets = read_env(target.output / ".env")
    assert _mode(bundle / "replica.env") == 0o600
    assert env["REPLICATION_PASSWORD"] == secrets["OFFSITE_REPLICATION_PASSWORD"]
    assert env["REPLICATION_PASSWORD"] not in (secrets["REPLICATION_PASSWORD"], secrets["DB_PASSWORD_BACKEND"])
    assert "POSTGRES_PASSWORD" not in env
    assert (env["PRIMARY_HOST"], env["PRIMARY_PORT"], env["PRIMARY_SSLMODE"], env["REPLICA_SLOT"]) == (
        "db.example.org", "15432", "verify-full", "offsite_dr")
    assert (bundle / "config/ca.crt").read_bytes() == (target.output / "offsite/ca.crt").read_bytes()
    assert not list(bundle.rglob("*.key"))  # no private key leaves the stack's host
    assert "ssl = on" not in (bundle / "config/postgresql.conf").read_text()
    assert (bundle / "image/Dockerfile").is_file() and (bundle / "image/entrypoint").is_file()
    assert _mode(bundle / "run.sh") == 0o755
    compose = YAML(typ="safe").load((bundle / "compose.yaml").read_text())
    jsonschema.validate(compose, json.loads(COMPOSE_SCHEMA.read_text()))
    service = compose["services"]["replica"]
    assert service["build"]["context"] == "./image" and service["env_file"] == ["replica.env"]
    # run.sh's names, so promote.sh finds a replica started either way
    assert (service["container_name"], compose["volumes"]["data"]["name"]) == (
        "shop-offsite-dr", "shop-offsite-dr-data")

    assert export_replica(Session(target), bundle).any is False  # again: identical


def test_export_refuses_a_spec_without_offsite_and_a_foreign_folder(spec_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="dbc.offsite is not declared"):
        export_replica(Session(Target.of(write_spec(spec_dir, MINIMAL), None)), tmp_path / "bundle")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(UsageError, match="not empty"):
        export_replica(Session(Target.of(write_spec(spec_dir, OFFSITE), None)), foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


REPLICATION = ("application_name,client_addr,state,sync_state,replay_lsn,lag_bytes,lag_s\n"
               "offsite_dr,203.0.113.4,streaming,async,0/3000000,0,\n")
SLOTS = ("slot_name,slot_type,active,restart_lsn,wal_status,retained_bytes\n"
         "offsite_dr,physical,t,0/3000000,reserved,0\n")
PRIMARY_ROW: dict[str, str | None] = {"in_recovery": "f", "lsn": "0/3000000", "receive_lsn": None,
                                      "replay_age_s": None, "receiver": None, "receiver_slot": None}


def test_status_shows_the_offsite_replica_from_the_primary() -> None:
    observed = [("db-primary", "demo-db-primary-1", "running (healthy)", PRIMARY_ROW, None)]
    node = db.assemble("demo", observed, REPLICATION, SLOTS, offsite="offsite_dr").nodes[-1]
    assert (node.service, node.container, node.state, node.role, node.replication, node.lag_bytes,
            node.slot_health) == ("offsite_dr", "203.0.113.4", "remote", "replica", "streaming", 0, "ok")
    gone = db.assemble("demo", observed, "application_name\n", SLOTS.replace(",t,", ",f,"), "offsite_dr").nodes[-1]
    assert (gone.role, gone.replication, gone.slot_health, gone.error) == (
        None, "not connected", "inactive", "not connected to the primary")


def test_a_test_stack_with_an_offsite_replica_says_why_it_has_no_db_url(spec: Path) -> None:
    under_test = StackUnderTest(spec)  # nothing runs until start()
    try:
        with pytest.raises(UsageError, match=r"with dbc.offsite declared.*use exec\('db-primary'"):
            under_test.db_url()
    finally:
        shutil.rmtree(under_test.folder)
