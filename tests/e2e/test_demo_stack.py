"""The default blueprint, end to end: what a user checks after `deploystack up`.

Tests that change the stack come last in this file (pytest keeps file order); `down` is tested last
of all, in test_teardown.py.
"""

from __future__ import annotations

import collections

import pytest
import requests

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.docker


def test_routes_through_the_load_balancer(stack: Stack) -> None:
    assert stack.get("/api/health/").json()["app"] == "backend"
    feed = stack.get("/bff/feed/")
    assert feed.status_code == 200 and feed.json()["backend"]["app"] == "backend"
    home = stack.get("/")
    assert home.status_code == 200 and "vue.global.prod" in home.text
    vue = stack.get("/static/vendor/vue.global.prod.js")
    assert vue.status_code == 200 and len(vue.content) > 50_000


def test_http_redirects_to_https(stack: Stack) -> None:
    reply = requests.get(stack.http + "/api/health/", allow_redirects=False, timeout=10)
    assert reply.status_code == 301
    assert reply.headers["Location"] == stack.https + "/api/health/"


def test_notes_are_stored_in_postgres(stack: Stack) -> None:
    created = requests.post(stack.https + "/api/notes/", json={"text": "hello from e2e"}, verify=False, timeout=10)
    assert created.status_code == 201, created.text
    note_id = created.json()["id"]
    read = stack.get(f"/api/notes/{note_id}/")
    assert read.status_code == 200 and read.json()["text"] == "hello from e2e"
    (primary,) = stack.containers("db-primary")
    code, out = primary.exec_run(["psql", "-U", "postgres", "-d", "backend", "-tAc",
                                  f"SELECT text FROM notes_note WHERE id = {int(note_id)}"], user="postgres")
    assert code == 0 and out.decode().strip() == "hello from e2e"


def test_a_note_is_read_back_from_a_replica(stack: Stack) -> None:
    """Writes go to the primary; a later read is served by a replica (X-DB-Alias), whose table has the row."""
    note_id = requests.post(stack.https + "/api/notes/", json={"text": "read me from a replica"}, verify=False,
                            timeout=10).json()["id"]
    aliases = [stack.get(f"/api/notes/{note_id}/").headers["X-DB-Alias"] for _ in range(10)]
    assert "replica_1" in aliases
    (replica,) = stack.containers("db-replica-1")
    code, out = replica.exec_run(["psql", "-U", "postgres", "-d", "backend", "-tAc",
                                  f"SELECT text FROM notes_note WHERE id = {int(note_id)}"])
    assert code == 0 and out.decode().strip() == "read me from a replica"


@pytest.mark.parametrize(("app", "path"), [("backend", "/api/health/"), ("frontend", "/"), ("bff", "/bff/health/")])
def test_every_replica_answers_round_robin(stack: Stack, app: str, path: str) -> None:
    replicas = {c.attrs["Config"]["Hostname"] for c in stack.containers(app)}
    served = collections.Counter(stack.get(path).headers["X-Served-By"] for _ in range(4 * len(replicas)))
    assert set(served) == replicas


def test_only_the_lbc_publishes_ports(stack: Stack) -> None:
    publishing = {c.labels["com.docker.compose.service"] for c in stack.containers()
                  if any(c.attrs["HostConfig"].get("PortBindings") or {})}
    assert publishing == {"lbc"}
    lbc_ports = stack.containers("lbc")[0].attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for binds in lbc_ports.values() for b in binds} == {"127.0.0.1"}


def _connects(container: object, ip: str, port: int) -> bool:
    code, _ = container.exec_run(  # type: ignore[attr-defined]
        ["timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{ip}/{port}"])
    return code == 0


def test_private_network_has_no_egress(stack: Stack) -> None:
    """A private-only container reaches its peers but nothing beyond the private network.

    Probed against the stack's own LBC: its address on `public` lies outside `private`, so reaching it
    would need the host to forward the packet out of the private bridge, which an internal network
    forbids (and which is all that egress to the outside world would need too).
    """
    private, public = f"{stack.project}_private", f"{stack.project}_public"
    assert stack.docker.networks.get(private).attrs["Internal"] is True
    backend = stack.containers("backend")[0]
    assert set(backend.attrs["NetworkSettings"]["Networks"]) == {private}
    lbc_nets = stack.containers("lbc")[0].attrs["NetworkSettings"]["Networks"]
    assert _connects(backend, lbc_nets[private]["IPAddress"], 80)
    assert not _connects(backend, lbc_nets[public]["IPAddress"], 80)


def _fingerprint(stack: Stack) -> dict[str, tuple[str, str]]:
    return {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in stack.containers()}


def test_up_twice_changes_nothing(stack: Stack) -> None:
    before = _fingerprint(stack)
    result = stack.cli("up")
    assert "nothing changed" in result.stdout
    assert _fingerprint(stack) == before


def test_changing_one_apps_env_recreates_only_that_app(stack: Stack) -> None:
    before = _fingerprint(stack)
    stack.edit_spec(lambda d: d["apc"]["apps"]["bff"].__setitem__("env", {"FEED_TITLE": "changed"}))
    stack.cli("up")
    after = _fingerprint(stack)
    changed = {name for name in before if before[name] != after.get(name)}
    assert changed == {f"{stack.project}-bff-1", f"{stack.project}-bff-migrate-1"}
    assert stack.get("/bff/health/").status_code == 200
