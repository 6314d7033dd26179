"""`deploystack db upgrade` on real Docker: a PostgreSQL 15 stack (primary + one replica, one app) with rows
written through the app; `ha: patroni` set in the spec; `up` refuses (no empty cluster beside the data);
`db upgrade --yes` moves it to Patroni + PostgreSQL 17; every row reads back through the app, the app's
role and database are as they were, a new write works, and the old volumes are kept. Before that, an
upgrade that fails (a tablespace the new cluster cannot make) rolls back to the old stack, which serves.

Then, on the same (now Patroni) stack: etcd's members are replaced one at a time, a quorum up all along.

Its own stack (the module's): about 4 minutes here once the images exist."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests
import urllib3
from ruamel.yaml import YAML

from deploystack.plan.names import container_name, volume_name
from deploystack.testing import StackUnderTest

pytestmark = pytest.mark.docker

SPEC = Path(__file__).parents[1] / "fixtures/projects/pgupgrade-small/deploystack.yaml"
NOTES = 40
# What "as they were" means for the app's role and database: attributes, membership, owner, rights.
IDENTITY_SQL = (
    "SELECT r.rolname, r.rolsuper, r.rolcanlogin, r.rolcreaterole, r.rolcreatedb, r.rolreplication, "
    "pg_has_role(r.rolname, 'deploystack_apps', 'member'), pg_get_userbyid(d.datdba), d.datacl "
    "FROM pg_roles r, pg_database d WHERE r.rolname = 'backend' AND d.datname = 'backend'"
)


@pytest.fixture(scope="module")
def old_stack() -> Iterator[StackUnderTest]:
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    with StackUnderTest(SPEC) as under_test:
        yield under_test


def cli(stack: StackUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(stack.spec)],
                          capture_output=True, text=True, timeout=900)


def sql(stack: StackUnderTest, service: str, query: str, database: str = "backend") -> str:
    code, out = stack.exec(service, ["psql", "-X", "-h", "/run/postgresql", "-U", "postgres", "-d", database,
                                     "-qtAc", query])
    assert code == 0, out
    return out.strip()


def set_patroni(spec: Path) -> None:
    yaml = YAML(typ="rt")
    data = yaml.load(spec.read_text(encoding="utf-8"))
    data["dbc"]["ha"] = "patroni"
    with spec.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)


def test_upgrade_keeps_every_row(old_stack: StackUnderTest) -> None:
    stack = old_stack
    session = requests.Session()
    written: dict[int, str] = {}
    for n in range(NOTES):
        text = f"note {n} before the upgrade: é ü 🐘 'quoted' \\ {n * n}"
        reply = session.post(stack.url("/api/notes/"), json={"text": text}, verify=False, timeout=10)
        assert reply.status_code == 201, reply.text
        written[int(reply.json()["id"])] = text
    assert sql(stack, "db-primary", "SHOW server_version").startswith("15")
    identity = sql(stack, "db-primary", IDENTITY_SQL)

    set_patroni(stack.spec)
    refused = cli(stack, "up")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "deploystack db upgrade" in refused.stderr
    assert not (stack.target.output / "config/patroni").exists()  # refused before writing anything
    client = docker.from_env()
    assert not client.containers.list(all=True, filters={"name": f"{stack.project}-db-node"}), \
        "up started a cluster beside the old data"

    # A failure on the way rolls back: a tablespace (pg_dumpall carries its CREATE, not its folder) stops
    # the restore of the roles on the new cluster; the old stack then runs again as it was.
    for node in ("db-primary", "db-replica-1"):  # the replica replays the CREATE TABLESPACE
        code, out = stack.exec(node, ["sh", "-c", "mkdir -p /var/lib/postgresql/ts && chown postgres "
                                                  "/var/lib/postgresql/ts"])
        assert code == 0, out
    sql(stack, "db-primary", "CREATE TABLESPACE upgrade_test LOCATION '/var/lib/postgresql/ts'")
    started = time.monotonic()
    failed = cli(stack, "db", "upgrade", "--yes")
    print(f"\nthe failed db upgrade and its rollback took {time.monotonic() - started:.1f}s")
    assert failed.returncode == 4, failed.stdout + failed.stderr
    assert "Rolled back: the PostgreSQL 15 stack runs again" in failed.stderr, failed.stderr
    assert not client.containers.list(all=True, filters={"name": f"{stack.project}-db-node"})
    assert not [v for v in client.volumes.list(filters={"label": f"com.docker.compose.project={stack.project}"})
                if "db-node" in (v.name or "") or "etcd" in (v.name or "")]
    first = next(iter(written))
    reply = session.get(stack.url(f"/api/notes/{first}/"), verify=False, timeout=10)
    assert reply.status_code == 200 and reply.json()["text"] == written[first]  # the old stack serves again
    assert cli(stack, "up").returncode == 2  # and the upgrade still waits
    sql(stack, "db-primary", "DROP TABLESPACE upgrade_test")

    started = time.monotonic()
    upgraded = cli(stack, "db", "upgrade", "--yes")
    took = time.monotonic() - started
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    print(f"\ndb upgrade took {took:.1f}s:\n{upgraded.stdout}\n{upgraded.stderr}")
    assert "the same before and after" in upgraded.stdout

    status = cli(stack, "db", "status", "--json")
    leader = json.loads(status.stdout)["leader"]
    assert leader is not None and leader.startswith("db-node-")
    assert sql(stack, leader, "SHOW server_version").startswith("17")
    assert sql(stack, leader, IDENTITY_SQL) == identity

    for note, text in written.items():  # every row, read back through the app
        reply = session.get(stack.url(f"/api/notes/{note}/"), verify=False, timeout=10)
        assert reply.status_code == 200, (note, reply.text)
        assert reply.json()["text"] == text
    reply = session.post(stack.url("/api/notes/"), json={"text": "after the upgrade"}, verify=False, timeout=10)
    assert reply.status_code == 201, reply.text
    assert int(reply.json()["id"]) > max(written)  # the sequence came along too
    assert session.get(stack.url(f"/api/notes/{reply.json()['id']}/"), verify=False,
                       timeout=10).json()["text"] == "after the upgrade"

    for volume in ("db-primary-data", "db-replica-1-data"):  # kept, not deleted
        client.volumes.get(volume_name(stack.project, volume))
    assert not client.containers.list(all=True, filters={"name": f"{stack.project}-db-primary"})
    again = cli(stack, "up")  # nothing pending any more: up goes through
    assert again.returncode == 0, again.stdout + again.stderr


def test_etcd_members_are_replaced_one_at_a_time(old_stack: StackUnderTest) -> None:
    """On the upgraded (Patroni) stack: a change to etcd's configuration (as a new deploystack version may
    bring) replaces the members one at a time: two of three stay up, writes through the app go on."""
    stack = old_stack
    if stack.stack.dbc.ha != "patroni":
        pytest.skip("needs the stack the upgrade test left on Patroni")
    from deploystack.engine.apply import Converger
    from deploystack.engine.client import connect
    from deploystack.operations import Session

    rendered = Session(stack.target).rendered
    changed = tuple(dataclasses.replace(s, environment=(*s.environment, ("ETCD_LOG_LEVEL", "warn")))
                    if s.name.startswith("etcd-") else s for s in rendered.plan.services)
    rendered = dataclasses.replace(rendered, plan=dataclasses.replace(rendered.plan, services=changed))
    client = docker.from_env()
    members = {f"etcd-{n}": container_name(stack.project, f"etcd-{n}") for n in (1, 2, 3)}
    before = {name: client.containers.get(c).id for name, c in members.items()}
    leader = json.loads(cli(stack, "db", "status", "--json").stdout)["leader"]

    done = threading.Event()
    fewest_up = [3]
    samples = [0]
    writes = {"ok": 0, "failed": 0}
    failures: list[str] = []  # when and how each failed write failed, for the message

    def watch() -> None:
        while not done.wait(0.2):
            try:
                up = sum(1 for c in client.containers.list(filters={"name": f"{stack.project}-etcd-"})
                         if (c.attrs.get("State", {}).get("Health") or {}).get("Status") == "healthy")
            except docker.errors.NotFound:
                continue  # a member removed between the listing and its inspection: look again
            fewest_up[0] = min(fewest_up[0], up)
            samples[0] += 1

    def write() -> None:
        session = requests.Session()
        for n in range(2000):  # bounded in count and in time (done)
            if done.is_set():
                return
            try:
                response = session.post(stack.url("/api/notes/"), json={"text": f"etcd roll {n}"},
                                        verify=False, timeout=5)
                ok, what = response.status_code == 201, f"{response.status_code} {response.text[:120]!r}"
            except requests.RequestException as exc:
                ok, what = False, type(exc).__name__
            writes["ok" if ok else "failed"] += 1
            if not ok:
                failures.append(f"{time.monotonic() - started:.1f}s {what}")
            time.sleep(0.05)

    threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=write, daemon=True)]
    started = time.monotonic()
    since = int(time.time())
    for thread in threads:
        thread.start()
    try:
        Converger(connect(), rendered, stack.report).up()
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)
    print(f"\netcd members replaced in {time.monotonic() - started:.1f}s; fewest healthy members "
          f"{fewest_up[0]} ({samples[0]} samples); writes {writes}")
    after = {name: client.containers.get(c).id for name, c in members.items()}
    assert all(after[name] != before[name] for name in members)  # each one was replaced
    assert samples[0] >= 20  # the watch ran all along
    assert fewest_up[0] >= 2  # a quorum all along
    if writes["failed"]:
        for service in ("db-router", *(f"db-node-{n}" for n in (1, 2))):
            logs = client.containers.get(container_name(stack.project, service)).logs(since=since, timestamps=True)
            print(f"--- {service} since the roll began:\n{logs.decode(errors='replace')[-4000:]}")
    assert writes["failed"] == 0 and writes["ok"] > 0, failures[:20]
    assert json.loads(cli(stack, "db", "status", "--json").stdout)["leader"] == leader
