"""The offsite replica, with this machine as the other host: a stack of db-primary and db-replica-1 that
declares dbc.offsite on the default bridge's gateway, `deploystack export replica`, and the folder's
`run.sh` started under a name of its own. Then what a user checks: rows arrive over TLS through its own
slot, nothing else gets in through the published port, `db status` lists it, `up` keeps its slot, and
`promote.sh` makes it a writable primary."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import psycopg
import pytest

from deploystack.operations import Session
from deploystack.operations import stack as stack_ops
from deploystack.render.envfile import read_env
from deploystack.testing import StackUnderTest, free_port
from tests.conftest import BLUEPRINTS, eventually

pytestmark = pytest.mark.docker

ROLE = "offsite_dr"


@dataclass
class Offsite:
    stack: StackUnderTest
    bundle: Path
    name: str  # the offsite replica's container (its volume: <name>-data)
    image: str
    gateway: str  # where the primary publishes, and what the replica dials
    port: int
    read_port: int  # the replica's own published port on 127.0.0.1 (read-only clients)

    def secret(self, name: str) -> str:
        return read_env(self.stack.target.output / ".env")[name]


def gateway_address(client: docker.DockerClient) -> str:
    """The default bridge's gateway: an address of this host that containers on that bridge reach.

    A dockerd that finds docker0 already there (started again on the same machine) records only the
    subnet; the gateway is then docker0's own address, the subnet's first host."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return str(config.get("Gateway") or next(ipaddress.ip_network(config["Subnet"]).hosts()))


def free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def write_spec(folder: Path, gateway: str, port: int) -> Path:
    apps = BLUEPRINTS / "default" / "apps"
    spec = folder / "deploystack.yaml"
    spec.write_text(f"""\
project: offsite
apc:
  apps:
    backend:
      source: {apps / "backend"}
      wsgi: backend.wsgi:application
dbc:
  replicas: 1
  offsite:
    name: dr
    host: {gateway}
    bind: {gateway}
    port: {port}
""")
    return spec


def run(command: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def health(client: docker.DockerClient, name: str) -> str:
    try:
        return str(client.containers.get(name).attrs["State"].get("Health", {}).get("Status", "none"))
    except docker.errors.NotFound:
        return "gone"


def remove_offsite(client: docker.DockerClient, name: str, image: str) -> None:
    """The offsite host's container, volume and image, whatever state they are in."""
    for remove in (lambda: client.containers.get(name).remove(force=True, v=True),
                   lambda: client.volumes.get(f"{name}-data").remove(force=True),
                   lambda: client.images.remove(image)):
        with contextlib.suppress(docker.errors.NotFound):
            remove()


@pytest.fixture(scope="module")
def offsite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offsite]:
    client = docker.from_env()
    gateway = gateway_address(client)
    folder = tmp_path_factory.mktemp("offsite")
    spec = write_spec(folder, gateway, free_port_on(gateway))
    with StackUnderTest(spec, services=["db-replica-1"]) as stack:
        port = stack.stack.dbc.offsite.port  # type: ignore[union-attr]
        found = Offsite(stack, folder / "bundle", f"{stack.project}-offsite", f"{stack.project}-offsite-db:test",
                        gateway, port, free_port())
        try:
            run([sys.executable, "-m", "deploystack", "export", "replica", "-f", str(stack.spec),
                 "-o", str(found.bundle)])
            run([str(found.bundle / "run.sh")], env={
                "NAME": found.name, "IMAGE": found.image, "BASE_IMAGE": "deploystack/base:bookworm",
                "PUBLISH": f"127.0.0.1:{found.read_port}"})
            eventually(lambda: health(client, found.name) == "healthy", "the offsite replica healthy", 300)
            yield found
        finally:
            remove_offsite(client, found.name, found.image)


def sql(offsite: Offsite, container: str, query: str) -> tuple[int, str]:
    """psql as postgres over the local socket of `container`."""
    code, out = docker.from_env().containers.get(container).exec_run(
        ["psql", "-X", "-h", "/run/postgresql", "-U", "postgres", "-d", "backend", "-qtAc", query])
    return int(code), out.decode(errors="replace").strip()


def primary(offsite: Offsite) -> str:
    return f"{offsite.stack.project}-db-primary-1"


def from_outside(offsite: Offsite, conninfo: str, password: str, query: str = "IDENTIFY_SYSTEM") -> tuple[int, str]:
    """psql from a throwaway container on the default bridge, through the primary's published port."""
    client = docker.from_env()
    container = client.containers.run(
        offsite.image, ["psql", "-X", "-qtA", "-c", query, f"host={offsite.gateway} port={offsite.port} {conninfo}"],
        entrypoint=[], detach=True, network_mode="bridge", environment={"PGPASSWORD": password},
        volumes={str(offsite.bundle / "config"): {"bind": "/etc/deploystack", "mode": "ro"}})
    try:
        code = int(container.wait(timeout=60)["StatusCode"])
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True, v=True)  # the image VOLUME: no anonymous volume left


def test_a_row_committed_on_the_primary_reaches_the_offsite_replica(offsite: Offsite) -> None:
    code, out = sql(offsite, primary(offsite), "SET ROLE backend; CREATE TABLE orders(id int PRIMARY KEY, item text);"
                                               "INSERT INTO orders VALUES (1, 'committed on the primary')")
    assert code == 0, out
    eventually(lambda: sql(offsite, offsite.name, "SELECT item FROM orders WHERE id = 1")[1]
               == "committed on the primary", "the row on the offsite replica", 60)

    # A read-only client on the other host: the app role through the replica's own published port.
    url = (f"postgresql://backend:{offsite.secret('DB_PASSWORD_BACKEND')}@127.0.0.1:{offsite.read_port}/backend")
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT item FROM orders").fetchall() == [("committed on the primary",)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO orders VALUES (2, 'written on the replica')")


def test_the_primary_streams_to_it_over_tls_through_its_own_slot(offsite: Offsite) -> None:
    code, out = sql(offsite, primary(offsite),
                    "SELECT r.state, s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) "
                    f"WHERE r.application_name = '{ROLE}'")
    assert code == 0, out
    state, ssl, version = out.split("|")
    assert (state, ssl) == ("streaming", "t") and version.startswith("TLSv1.")
    code, out = sql(offsite, primary(offsite), f"SELECT active FROM pg_replication_slots WHERE slot_name = '{ROLE}'")
    assert (code, out) == (0, "t")
    code, out = sql(offsite, offsite.name, "SELECT status, sender_host FROM pg_stat_wal_receiver")
    assert out == f"streaming|{offsite.gateway}"


def test_the_published_port_takes_only_the_offsite_role_over_tls(offsite: Offsite) -> None:
    password = offsite.secret("OFFSITE_REPLICATION_PASSWORD")
    replication = f"user={ROLE} dbname=replication replication=true"
    # The same credentials over TLS, checked against the CA and the host name: accepted.
    code, out = from_outside(offsite, f"{replication} sslmode=verify-full sslrootcert=/etc/deploystack/ca.crt",
                             password)
    assert code == 0, out
    code, out = from_outside(offsite, f"{replication} sslmode=disable", password)
    assert code != 0 and "no encryption" in out, out
    # The app role has the password, and the in-stack replication role too, but not from outside.
    code, out = from_outside(offsite, "user=backend dbname=backend sslmode=require",
                             offsite.secret("DB_PASSWORD_BACKEND"),
                             "SELECT 1")
    assert code != 0 and "pg_hba.conf rejects connection" in out, out
    code, out = from_outside(offsite, "user=replicator dbname=replication replication=true sslmode=require",
                             offsite.secret("REPLICATION_PASSWORD"))
    assert code != 0 and "no pg_hba.conf entry for replication connection" in out, out
    # From the private network the app role still connects (the in-stack replica's container stands in for an app).
    code, out = offsite.stack.exec("db-replica-1", [
        "env", f"PGPASSWORD={offsite.secret('DB_PASSWORD_BACKEND')}",
        "psql", "-X", "-qtAc", "SELECT count(*) FROM orders", "host=db-primary user=backend dbname=backend"])
    assert (code, out.strip()) == (0, "1")


def test_db_status_lists_it_and_up_keeps_its_slot_while_it_is_away(offsite: Offsite) -> None:
    stack = offsite.stack
    data = json.loads(run([sys.executable, "-m", "deploystack", "db", "status", "--json", "-f", str(stack.spec)]))
    node = next(n for n in data["nodes"] if n["service"] == ROLE)
    assert (node["state"], node["role"], node["replication"], node["slot_health"]) == (
        "remote", "replica", "streaming", "ok")

    client = docker.from_env()
    client.containers.get(offsite.name).stop(timeout=60)
    eventually(lambda: sql(offsite, primary(offsite),
                           f"SELECT active FROM pg_replication_slots WHERE slot_name = '{ROLE}'")[1] == "f",
               "the offsite slot inactive", 30)
    stack_ops.up(Session(stack.target, stack.report), services=stack.services)  # drops stale slots: not this one
    assert sql(offsite, primary(offsite), f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{ROLE}'"
               ) == (0, "1")
    code, out = sql(offsite, primary(offsite), "INSERT INTO orders VALUES (3, 'while it was away')")
    assert code == 0, out
    client.containers.get(offsite.name).start()
    eventually(lambda: sql(offsite, offsite.name, "SELECT item FROM orders WHERE id = 3")[1] == "while it was away",
               "the offsite replica catching up through its slot", 120)


def test_promote_makes_it_a_writable_primary_that_stays_one(offsite: Offsite) -> None:
    client = docker.from_env()
    run([str(offsite.bundle / "promote.sh")], env={
        "NAME": offsite.name, "IMAGE": offsite.image, "BASE_IMAGE": "deploystack/base:bookworm",
        "PUBLISH": f"127.0.0.1:{offsite.read_port}"})
    eventually(lambda: health(client, offsite.name) == "healthy", "the promoted replica healthy", 120)
    assert sql(offsite, offsite.name, "SELECT pg_is_in_recovery()") == (0, "f")
    code, out = sql(offsite, offsite.name, "INSERT INTO orders VALUES (4, 'written after promotion') RETURNING id")
    assert (code, out) == (0, "4")
    client.containers.get(offsite.name).restart(timeout=60)
    eventually(lambda: health(client, offsite.name) == "healthy", "the promoted replica healthy again", 120)
    assert sql(offsite, offsite.name, "SELECT pg_is_in_recovery(), string_agg(id::text, ',' ORDER BY id) FROM orders"
               ) == (0, "f|1,3,4")
