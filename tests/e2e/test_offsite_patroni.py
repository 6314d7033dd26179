"""The offsite replica of a Patroni stack, with this machine as the other host: two PostgreSQL 17 nodes under
Patroni (dbc.replicas 1), the router, and `db-offsite` published on the default bridge's gateway;
`deploystack export replica` and the folder's `run.sh`, as on a streaming stack (tests/e2e/test_offsite.py).
What a user checks: rows arrive over TLS through the permanent slot Patroni manages, nothing else gets in
through the published port, and after `deploystack db switchover` the same replica (not rebuilt) streams from
the new leader and gets the rows written there."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from deploystack.operations import Session
from deploystack.operations import stack as stack_ops
from deploystack.render.envfile import read_env
from deploystack.testing import StackUnderTest, free_port
from tests.conftest import BLUEPRINTS, eventually
from tests.e2e.test_offsite import free_port_on, from_outside, gateway_address, health, remove_offsite, run

pytestmark = pytest.mark.docker

ROLE = "offsite_dr"
NODES = ("db-node-1", "db-node-2")


@dataclass
class Offsite:
    stack: StackUnderTest
    bundle: Path
    name: str  # the offsite replica's container
    image: str
    gateway: str
    port: int

    def secret(self, name: str) -> str:
        return read_env(self.stack.target.output / ".env")[name]


def write_spec(folder: Path, gateway: str, port: int) -> Path:
    spec = folder / "deploystack.yaml"
    spec.write_text(f"""\
project: offpat
apc:
  apps:
    backend:
      source: {BLUEPRINTS / "default" / "apps" / "backend"}
      wsgi: backend.wsgi:application
      replicas: 1
acc: {{redis: false, memcached: false, rabbitmq: false}}
mmc: {{enabled: false}}
dbc:
  ha: patroni
  replicas: 1
  offsite:
    name: dr
    host: {gateway}
    bind: {gateway}
    port: {port}
""")
    return spec


def cluster(offsite: Offsite) -> dict[str, Any]:
    out = run([sys.executable, "-m", "deploystack", "db", "status", "--json", "-f", str(offsite.stack.spec)])
    data: dict[str, Any] = json.loads(out)
    return data


def both_streaming(offsite: Offsite) -> str | None:
    """The leader, once Patroni runs both nodes (the standby streaming)."""
    members = cluster(offsite)["members"]
    leaders = [m["service"] for m in members if m["role"] == "leader" and m["patroni_state"] == "running"]
    standbys = [m for m in members if m["role"] != "leader" and m["patroni_state"] == "streaming"]
    return leaders[0] if len(leaders) == 1 and len(standbys) == 1 else None


@pytest.fixture(scope="module")
def offsite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offsite]:
    client = docker.from_env()
    gateway = gateway_address(client)
    folder = tmp_path_factory.mktemp("offsite-patroni")
    spec = write_spec(folder, gateway, free_port_on(gateway))
    # The database alone: both nodes, the router (its readiness provisions the roles) and the proxy.
    with StackUnderTest(spec, services=["db-router", "db-offsite", *NODES]) as stack:
        port = stack.stack.dbc.offsite.port  # type: ignore[union-attr]
        found = Offsite(stack, folder / "bundle", f"{stack.project}-offsite", f"{stack.project}-offsite-db:test",
                        gateway, port)
        try:
            run([sys.executable, "-m", "deploystack", "export", "replica", "-f", str(stack.spec),
                 "-o", str(found.bundle)])
            run([str(found.bundle / "run.sh")], env={
                "NAME": found.name, "IMAGE": found.image, "BASE_IMAGE": "deploystack/base:trixie",
                "PUBLISH": f"127.0.0.1:{free_port()}"})
            eventually(lambda: health(client, found.name) == "healthy", "the offsite replica healthy", 600)
            yield found
        finally:
            remove_offsite(client, found.name, found.image)


def sql(container: str, query: str, database: str = "backend") -> tuple[int, str]:
    """psql as postgres over the local socket of `container`."""
    code, out = docker.from_env().containers.get(container).exec_run(
        ["psql", "-X", "-h", "/run/postgresql", "-U", "postgres", "-d", database, "-qtAc", query])
    return int(code), out.decode(errors="replace").strip()


def node_sql(offsite: Offsite, node: str, query: str) -> tuple[int, str]:
    return sql(f"{offsite.stack.project}-{node}-1", query)


def arrived(offsite: Offsite, row: int, text: str) -> bool:
    return sql(offsite.name, f"SELECT item FROM orders WHERE id = {row}") == (0, text)


def streams_over_tls(offsite: Offsite, leader: str) -> bool:
    code, out = node_sql(offsite, leader, "SELECT r.state, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s "
                                          f"USING (pid) WHERE r.application_name = '{ROLE}'")
    return (code, out) == (0, "streaming|t")


def diagnosis(offsite: Offsite, leader: str) -> str:
    """What a failure leaves behind: the offsite replica's log and receiver, the leader's view of it."""
    client = docker.from_env()

    def log(container: str, skip: str) -> str:
        lines = client.containers.get(container).logs(tail=600).decode(errors="replace").splitlines()
        return "\n".join(line for line in lines if skip not in line)

    project = offsite.stack.project
    return "\n".join([
        "offsite log:", log(offsite.name, 'user "root"'), "proxy log:", log(f"{project}-db-offsite-1", "DNS"),
        *(part for node in NODES for part in (f"{node} log:", log(f"{project}-{node}-1", "no action"))),
        "receiver: " + sql(offsite.name, "SELECT * FROM pg_stat_wal_receiver")[1],
        "processes: " + client.containers.get(offsite.name).exec_run(
            ["sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; done"]).output.decode(),
        "conninfo: " + sql(offsite.name, "SHOW primary_conninfo")[1],
        "senders: " + node_sql(offsite, leader, "SELECT * FROM pg_stat_replication")[1],
        "slots: " + node_sql(offsite, leader, "SELECT * FROM pg_replication_slots")[1],
    ])


def test_rows_reach_the_offsite_replica_over_tls_through_a_permanent_slot(offsite: Offsite) -> None:
    leader = eventually(lambda: both_streaming(offsite), "a leader and a streaming standby", 120)
    code, out = node_sql(offsite, leader, "SET ROLE backend; CREATE TABLE orders(id int PRIMARY KEY, item text);"
                                          "INSERT INTO orders VALUES (1, 'before the switchover')")
    assert code == 0, out
    eventually(lambda: arrived(offsite, 1, "before the switchover"), "the row on the offsite replica", 60)
    assert sql(offsite.name, "SELECT pg_is_in_recovery(), current_setting('server_version_num')::int / 10000"
               ) == (0, "t|17")
    eventually(lambda: streams_over_tls(offsite, leader), "the offsite replica streaming over TLS", 30)
    # The slot is Patroni's (permanent): active on the leader, and kept on the standby too.
    assert node_sql(offsite, leader, f"SELECT active FROM pg_replication_slots WHERE slot_name = '{ROLE}'"
                    ) == (0, "t")
    standby = next(n for n in NODES if n != leader)
    eventually(lambda: node_sql(offsite, standby, "SELECT count(*) FROM pg_replication_slots "
                                                  f"WHERE slot_name = '{ROLE}' AND restart_lsn IS NOT NULL"
                                ) == (0, "1"), "the standby's copy of the permanent slot", 60)
    assert sql(offsite.name, "SELECT status FROM pg_stat_wal_receiver") == (0, "streaming")


def test_the_published_port_takes_only_the_offsite_role_over_tls(offsite: Offsite) -> None:
    password = offsite.secret("OFFSITE_REPLICATION_PASSWORD")
    replication = f"user={ROLE} dbname=replication replication=true"
    code, out = from_outside(offsite, f"{replication} sslmode=verify-full sslrootcert=/etc/deploystack/ca.crt",
                             password)
    assert code == 0, out
    code, out = from_outside(offsite, f"{replication} sslmode=disable", password)
    assert code != 0 and "pg_hba.conf rejects" in out, out
    code, out = from_outside(offsite, "user=backend dbname=backend sslmode=require",
                             offsite.secret("DB_PASSWORD_BACKEND"), "SELECT 1")
    assert code != 0 and "pg_hba.conf rejects connection" in out, out
    code, out = from_outside(offsite, "user=replicator dbname=replication replication=true sslmode=require",
                             offsite.secret("REPLICATION_PASSWORD"))
    assert code != 0 and "pg_hba.conf rejects replication connection" in out, out


def test_db_status_shows_the_offsite_replica(offsite: Offsite) -> None:
    found = cluster(offsite)["offsite"]
    assert (found["service"], found["replication"], found["slot_health"]) == (ROLE, "streaming", "ok")
    table = run([sys.executable, "-m", "deploystack", "db", "status", "-f", str(offsite.stack.spec)])
    assert ROLE in table


def test_after_a_switchover_it_follows_the_new_leader_without_a_rebuild(offsite: Offsite) -> None:
    before = eventually(lambda: both_streaming(offsite), "a leader and a streaming standby", 120)
    started = sql(offsite.name, "SELECT pg_postmaster_start_time()")
    system = sql(offsite.name, "SELECT system_identifier FROM pg_control_system()")
    switched = time.monotonic()
    run([sys.executable, "-m", "deploystack", "db", "switchover", "-f", str(offsite.stack.spec)], timeout=300)
    after = eventually(lambda: both_streaming(offsite), "the old leader back as a standby", 180)
    assert after != before
    code, out = node_sql(offsite, after, "INSERT INTO orders VALUES (2, 'after the switchover')")
    assert code == 0, out
    written = time.monotonic()
    try:
        eventually(lambda: arrived(offsite, 2, "after the switchover"), "the new leader's row on the offsite replica",
                   240)
    except AssertionError:
        print(diagnosis(offsite, after))
        raise
    health_log = docker.from_env().containers.get(offsite.name).attrs["State"].get("Health", {}).get("Log", [])
    restarts = sum("restarting it" in entry.get("Output", "") for entry in health_log)
    print(f"\nswitchover to {after}: walreceiver restarts by db-health in its last checks: {restarts}; "
          "the new leader's row on the offsite replica "
          f"{time.monotonic() - written:.1f} s after its commit, {time.monotonic() - switched:.1f} s after the "
          "switchover began")
    eventually(lambda: streams_over_tls(offsite, after), "the new leader streaming to it over TLS", 60)
    # The same server, never cloned again: same start, same system, the old rows, on the new timeline.
    assert sql(offsite.name, "SELECT pg_postmaster_start_time()") == started
    assert sql(offsite.name, "SELECT system_identifier FROM pg_control_system()") == system
    assert sql(offsite.name, "SELECT string_agg(id::text, ',' ORDER BY id) FROM orders") == (0, "1,2")
    timeline = next(m["timeline"] for m in cluster(offsite)["members"] if m["service"] == after)
    eventually(lambda: sql(offsite.name, "SELECT received_tli FROM pg_stat_wal_receiver") == (0, str(timeline)),
               "the offsite replica on the new leader's timeline", 60)
    # The new leader serves it through the slot Patroni kept there.
    assert node_sql(offsite, after, f"SELECT active FROM pg_replication_slots WHERE slot_name = '{ROLE}'") == (0, "t")


def dynamic_slots(offsite: Offsite, node: str) -> dict[str, Any]:
    code, out = offsite.stack.exec(node, ["python3", "-c", "import sys, urllib.request; sys.stdout.write("
                                          "urllib.request.urlopen('http://127.0.0.1:8008/config').read().decode())"])
    assert code == 0, out
    return dict(json.loads(out).get("slots") or {})


def test_up_puts_the_slot_back_into_patronis_configuration(offsite: Offsite) -> None:
    """A cluster bootstrapped before dbc.offsite was declared has no permanent slot in etcd: `up` adds it."""
    code, out = offsite.stack.exec("db-node-1", ["patronictl", "-c", "/etc/deploystack/patroni.yml", "edit-config",
                                                 "--force", "--quiet", "--set", f"slots.{ROLE}=null"])
    assert code == 0, out
    eventually(lambda: ROLE not in dynamic_slots(offsite, "db-node-1"), "the slot out of Patroni's configuration", 30)
    stack_ops.up(Session(offsite.stack.target, offsite.stack.report), services=offsite.stack.services)
    assert dynamic_slots(offsite, "db-node-1") == {ROLE: {"type": "physical"}}
    leader = eventually(lambda: both_streaming(offsite), "a leader and a streaming standby", 120)
    eventually(lambda: streams_over_tls(offsite, leader), "the offsite replica streaming again", 120)
    code, out = node_sql(offsite, leader, "INSERT INTO orders VALUES (3, 'after up')")
    assert code == 0, out
    eventually(lambda: arrived(offsite, 3, "after up"), "the row on the offsite replica", 120)
