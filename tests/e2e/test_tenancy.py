"""One identity per app, in the running demo stack (issue 14, item 3): from inside a backend replica,
with the credentials it runs with, its own tables answer on the primary and on the replica, while the
frontend's database refuses it; its role is no superuser; the apps' keys and passwords differ.

And a stack generated and brought up by the code before this change (main's, from git: one superuser
role owning the one database all apps share) keeps every row through today's `up`, and works."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests

from deploystack.operations import Session
from deploystack.operations import stack as stack_ops
from deploystack.testing import StackUnderTest
from tests.conftest import BLUEPRINTS, eventually
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
# main's last commit before one identity per app: what a user's existing stack was made by.
SHARED_LAYOUT_COMMIT = "bf33346ebc4070d09d6e13f7e6c6261ed073973e"

# Run inside an app replica: connect with the replica's own DB_* variables (to another database or host
# when asked) and answer what happened, as JSON.
PROBE = """
import json, os, sys
import psycopg
query, database, host = sys.argv[1], sys.argv[2] or os.environ["DB_NAME"], sys.argv[3] or os.environ["DB_HOST"]
try:
    with psycopg.connect(host=host, dbname=database, user=os.environ["DB_USER"],
                         password=os.environ["DB_PASSWORD"], connect_timeout=5) as conn:
        print(json.dumps({"rows": [list(map(str, row)) for row in conn.execute(query).fetchall()]}))
except psycopg.Error as exc:
    print(json.dumps({"error": str(exc).strip()}))
"""


@pytest.fixture(scope="module", autouse=True)
def running(stack: Stack) -> None:
    stack.cli("up")  # an earlier module may have taken the stack down


def probe(stack: Stack, app: str, query: str, database: str = "", host: str = "") -> dict[str, object]:
    (container, *_) = [c for c in stack.containers(app) if c.status == "running"]
    code, out = container.exec_run(["python", "-c", PROBE, query, database, host])
    assert code == 0, out.decode()
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def test_an_app_reads_its_own_tables_on_the_primary_and_the_replica(stack: Stack) -> None:
    created = requests.post(stack.https + "/api/notes/", json={"text": "tenancy"}, verify=False, timeout=10)
    assert created.status_code == 201, created.text
    query = f"SELECT text FROM notes_note WHERE id = {int(created.json()['id'])}"
    assert probe(stack, "backend", query) == {"rows": [["tenancy"]]}
    eventually(lambda: probe(stack, "backend", query, host="db-replica-1") == {"rows": [["tenancy"]]},
               "the row read as backend's role on the replica")
    assert probe(stack, "backend", "SELECT current_user, current_database()") == {"rows": [["backend", "backend"]]}


def test_an_app_cannot_open_another_apps_database_or_table(stack: Stack) -> None:
    for host in ("db-primary", "db-replica-1"):
        result = probe(stack, "frontend", "SELECT count(*) FROM notes_note", database="backend", host=host)
        assert "permission denied for database" in str(result.get("error")), result
    # the old shared database, still there as a snapshot on upgraded stacks, does not exist on a new one
    result = probe(stack, "bff", "SELECT 1", database="app")
    assert "error" in result, result


def test_app_roles_are_not_superusers(stack: Stack) -> None:
    for app in ("backend", "frontend", "bff"):
        assert probe(stack, app, "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                                 "WHERE rolname = current_user") == {"rows": [["False", "False", "False"]]}
        result = probe(stack, app, "COPY (SELECT 1) TO PROGRAM 'id'")
        assert "must be superuser or have privileges of the pg_execute_server_program role" in str(
            result.get("error")), result


def test_each_app_has_its_own_secret_key_and_database_password(stack: Stack) -> None:
    seen: dict[str, set[str]] = {"DJANGO_SECRET_KEY": set(), "DB_PASSWORD": set(), "DB_USER": set()}
    for app in ("backend", "frontend", "bff"):
        env = dict(e.split("=", 1) for e in stack.containers(app)[0].attrs["Config"]["Env"])
        for name in seen:
            seen[name].add(env[name])
    assert all(len(values) == 3 for values in seen.values()), {k: len(v) for k, v in seen.items()}


# -- a stack made by the code before -------------------------------------------------------------------

UPGRADE_SPEC = """\
project: tenancy
apc:
  apps:
    backend:
      source: {apps}/backend
      wsgi: backend.wsgi:application
      routes: [/api/]
    bff:
      source: {apps}/bff
      wsgi: bff.wsgi:application
      routes: [/bff/]
acc: {{redis: false, memcached: false, rabbitmq: false}}
mmc: {{enabled: false}}
cdc: {{enabled: false}}
dbc: {{replicas: 1}}
"""


def code_before(folder: Path) -> Path:
    """The code that made existing stacks (the last commit of main with the shared superuser layout),
    unpacked (git archive)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", SHARED_LAYOUT_COMMIT, "deploystack", "compose"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def psql(under: StackUnderTest, database: str, sql: str) -> str:
    code, out = under.exec("db-primary", ["psql", "-X", "-U", "postgres", "-d", database, "-qtAc", sql])
    assert code == 0, out
    return out.strip()


def test_up_moves_a_stack_of_the_shared_superuser_layout_to_one_role_per_app(tmp_path: Path) -> None:
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{SHARED_LAYOUT_COMMIT}^{{commit}}"],
                      capture_output=True).returncode != 0:
        pytest.skip(f"a shallow clone: no commit {SHARED_LAYOUT_COMMIT} to take the code before from")
    spec = tmp_path / "deploystack.yaml"
    spec.write_text(UPGRADE_SPEC.format(apps=BLUEPRINTS / "default" / "apps"))
    before = code_before(tmp_path / "before")
    under = StackUnderTest(spec)
    try:
        # `deploystack up` as the code before runs it, from a folder where only that code is importable.
        env = os.environ | {"PYTHONPATH": str(before)}
        result = subprocess.run([sys.executable, "-m", "deploystack", "up", "-f", str(under.spec)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=1800, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert psql(under, "app", "SELECT rolsuper FROM pg_roles WHERE rolname = 'app'") == "t"
        ids = []
        for n in range(40):
            created = requests.post(under.url("/api/notes/"), json={"text": f"before {n}"}, verify=False, timeout=10)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        assert psql(under, "app", "SELECT count(*), min(tableowner), max(tableowner) FROM notes_note, "
                                  "(SELECT tableowner FROM pg_tables WHERE tablename = 'notes_note') o"
                    ) == "40|app|app"

        under.start()  # today's `up` on the same output folder

        assert psql(under, "backend", "SELECT count(*) FROM notes_note") == "40"
        assert psql(under, "backend", "SELECT tableowner FROM pg_tables WHERE tablename = 'notes_note'") == "backend"
        assert psql(under, "postgres", "SELECT string_agg(rolname || ':' || rolsuper || rolcanlogin, ',' "
                                       "ORDER BY rolname) FROM pg_roles WHERE rolname IN ('app', 'backend', 'bff')"
                    ) == "app:falsefalse,backend:falsetrue,bff:falsetrue"
        for note_id, n in zip(ids, range(40), strict=True):  # through the app, every row as it was
            read = requests.get(under.url(f"/api/notes/{note_id}/"), verify=False, timeout=10)
            assert read.status_code == 200 and read.json()["text"] == f"before {n}", read.text
        created = requests.post(under.url("/api/notes/"), json={"text": "after"}, verify=False, timeout=10)
        assert created.status_code == 201, created.text
        # the router's reads go to the replica, which has the roles (and their passwords) too
        aliases = [requests.get(under.url(f"/api/notes/{created.json()['id']}/"), verify=False,
                                timeout=10).headers.get("X-DB-Alias") for _ in range(10)]
        assert "replica_1" in aliases, aliases
        assert requests.get(under.url("/bff/health/"), verify=False, timeout=10).status_code == 200
        assert not stack_ops.up(Session(under.target, under.report)).changed  # a second `up` changes nothing
    finally:
        under.stop()
