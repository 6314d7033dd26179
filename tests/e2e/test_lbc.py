"""The LBC on a real engine: TLS, the redirect, and fail2ban bans that really stop a client.

test_demo_stack.py runs first (pytest takes files in order) and its last test takes the stack down, so
this module brings it up again and leaves it up. The scanning client is a container of the stack's own
backend image (it has python3) on the public network only; traffic goes to the LBC and to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import docker
import docker.errors
import pytest
import requests

from deploystack.spec import load_stack
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.docker

MAXRETRY = 5  # the default blueprint leaves lbc.fail2ban at its defaults
PROBES = ["/wp-login.php", "/.env", "/phpmyadmin/index.php", "/xmlrpc.php", "/cgi-bin/test.cgi", "/.git/config"]
BAN_WAIT_S = 20  # fail2ban polls its log once a second; a ban lands in about one

# Runs in the client container: each request once, the status or the error's name, as one JSON list.
CLIENT = r"""
import http.client, json, ssl, sys
host, out = sys.argv[1], []
for method, path, port in json.loads(sys.argv[2]):
    if port == 443:
        conn = http.client.HTTPSConnection(host, port, timeout=3, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=3)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None,
                     headers={"Host": "localhost", "Content-Type": "application/json",
                              "X-Hub-Signature-256": "sha256=" + "0" * 64})
        out.append(conn.getresponse().status)
    except OSError as exc:  # refused (the ban's REJECT), timed out, reset
        out.append(type(exc).__name__)
    finally:
        conn.close()
print(json.dumps(out))
"""


class Client:
    """A container on the stack's public network only, sending requests to the LBC from its own address."""

    def __init__(self, container: docker.models.containers.Container, network: str, lbc_ip: str) -> None:
        self.container = container
        self.lbc_ip = lbc_ip
        container.reload()
        self.ip: str = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]

    def send(self, *requests_: tuple[str, str, int]) -> list[int | str]:
        code, out = self.container.exec_run(["python3", "-c", CLIENT, self.lbc_ip, json.dumps(requests_)])
        assert code == 0, out.decode()
        result: list[int | str] = json.loads(out)
        return result


@pytest.fixture(scope="module")
def lbc_stack(stack: Stack) -> Stack:
    stack.cli("up")  # test_demo_stack.py ends with `down`
    return stack


@pytest.fixture(scope="module")
def client(lbc_stack: Stack) -> Iterator[Client]:
    network = f"{lbc_stack.project}_public"
    name = f"{lbc_stack.project}-lbc-e2e-client"
    (backend, *_) = lbc_stack.containers("backend")
    (lbc,) = lbc_stack.containers("lbc")
    lbc_ip = lbc.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    with contextlib.suppress(docker.errors.NotFound):  # a leftover of an interrupted run
        lbc_stack.docker.containers.get(name).remove(force=True)
    container = lbc_stack.docker.containers.run(
        backend.image, entrypoint=["sleep", "600"], name=name, network=network, detach=True)
    try:
        yield Client(container, network, lbc_ip)
    finally:
        container.remove(force=True)


def lbc_exec(stack: Stack, command: str) -> tuple[int, str]:
    (lbc,) = stack.containers("lbc")
    code, out = lbc.exec_run(["bash", "-c", command])
    return code, out.decode(errors="replace")


def bans(stack: Stack) -> dict[str, list[str]]:
    data = json.loads(stack.cli("lbc", "bans", "--json").stdout)
    return {jail: [ban["address"] for ban in held] for jail, held in data.items()}


def lift(stack: Stack, address: str) -> None:
    """Leave no ban behind for the next test (exit 2 when there is none: fine)."""
    stack.cli("lbc", "unban", address, check=False)


def wait_until_refused(client: Client, port: int = 80) -> list[int | str]:
    deadline = time.monotonic() + BAN_WAIT_S
    while True:
        result = client.send(("GET", "/", port))
        if not isinstance(result[0], int) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_https_is_served_with_the_stacks_certificate(lbc_stack: Stack) -> None:
    code, pem = lbc_exec(lbc_stack, "cat /etc/deploystack-certs/tls.crt")
    assert code == 0
    domain = load_stack(lbc_stack.spec).domain
    address = urlsplit(lbc_stack.https)
    context = ssl.create_default_context(cadata=pem)  # verifies the chain and that it names the domain
    with socket.create_connection((address.hostname, address.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=domain) as tls:
        cert = tls.getpeercert()
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    assert cert is not None
    assert dict(item[0] for item in cert["subject"])["commonName"] == domain
    assert ("DNS", domain) in cert["subjectAltName"]


def test_http_redirects_and_https_answers_with_a_request_id_and_gzip(lbc_stack: Stack) -> None:
    redirect = requests.get(lbc_stack.http + "/api/health/", allow_redirects=False, timeout=10)
    assert (redirect.status_code, redirect.headers["Location"]) == (301, lbc_stack.https + "/api/health/")
    reply = lbc_stack.get("/static/vendor/vue.global.prod.js", headers={"Accept-Encoding": "gzip"}, stream=True)
    assert reply.status_code == 200 and reply.headers["Content-Encoding"] == "gzip"
    assert len(reply.headers["X-Request-ID"]) == 32
    assert "Strict-Transport-Security" not in reply.headers  # the certificate is self-signed


def test_a_scanner_is_banned_the_host_still_passes_and_unban_lets_it_back(lbc_stack: Stack, client: Client) -> None:
    try:
        assert client.send(("GET", "/", 80)) == [301]
        assert len(PROBES) > MAXRETRY
        answered = client.send(*[("GET", path, 80) for path in PROBES])
        assert answered[:MAXRETRY - 1] == [301] * (MAXRETRY - 1)  # nginx answers until fail2ban bans

        refused = wait_until_refused(client)
        assert refused[0] in {"ConnectionRefusedError", "TimeoutError"}, f"not banned: {refused}"
        assert client.send(("GET", "/api/health/", 443))[0] in {"ConnectionRefusedError", "TimeoutError"}
        assert lbc_stack.get("/api/health/").status_code == 200  # the host, through 127.0.0.1, still passes
        assert client.ip in bans(lbc_stack)["deploystack-scanners"]

        assert lbc_stack.cli("lbc", "unban", client.ip).stdout.strip() == f"unbanned {client.ip} (deploystack-scanners)"
        assert client.send(("GET", "/", 80)) == [301]
        assert client.ip not in bans(lbc_stack)["deploystack-scanners"]
    finally:
        lift(lbc_stack, client.ip)


def test_a_ban_outlives_a_recreated_lbc(lbc_stack: Stack, client: Client) -> None:
    """fail2ban's database is a volume: an LBC recreated (new image, new config) bans the same clients."""
    network = f"{lbc_stack.project}_public"
    try:
        client.send(*[("GET", path, 80) for path in PROBES])
        assert wait_until_refused(client)[0] in {"ConnectionRefusedError", "TimeoutError"}
        (lbc,) = lbc_stack.containers("lbc")
        lbc.remove(force=True)
        lbc_stack.cli("up")
        (lbc,) = lbc_stack.containers("lbc")
        again = Client(client.container, network, lbc.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])
        deadline = time.monotonic() + BAN_WAIT_S
        while client.ip not in bans(lbc_stack)["deploystack-scanners"]:
            assert time.monotonic() < deadline, "the ban did not come back"
            time.sleep(0.5)
        assert again.send(("GET", "/", 80))[0] in {"ConnectionRefusedError", "TimeoutError"}
        assert lbc_stack.get("/api/health/").status_code == 200
    finally:
        lift(lbc_stack, client.ip)


def test_unban_of_an_address_not_banned_or_not_an_address(lbc_stack: Stack) -> None:
    not_banned = lbc_stack.cli("lbc", "unban", "192.0.2.1", check=False)
    assert not_banned.returncode == 2
    assert f"192.0.2.1 is not banned in project {lbc_stack.project}" in not_banned.stderr
    not_ip = lbc_stack.cli("lbc", "unban", "gateway", check=False)
    assert not_ip.returncode == 2 and "'gateway' is not an IP address" in not_ip.stderr


def test_bad_webhook_signatures_get_banned(lbc_stack: Stack, client: Client) -> None:
    hook = f"/_cdc/hooks/{lbc_stack.project}"
    try:
        answered = client.send(*[("POST", hook, 443)] * (MAXRETRY + 1))
        assert answered[:MAXRETRY - 1] == [403] * (MAXRETRY - 1)
        refused = wait_until_refused(client, 443)
        assert refused[0] in {"ConnectionRefusedError", "TimeoutError"}, f"not banned: {refused}"
        assert client.ip in bans(lbc_stack)["deploystack-cdc"]
    finally:
        lift(lbc_stack, client.ip)


def test_scanning_from_the_host_never_bans_the_gateway(lbc_stack: Stack) -> None:
    """Loopback traffic reaches the LBC from a network's gateway address: banning it would lock out all."""
    gateways = {config["Gateway"] for net in ("public", "private")
                for config in lbc_stack.docker.networks.get(f"{lbc_stack.project}_{net}").attrs["IPAM"]["Config"]}
    for path in PROBES + PROBES:
        requests.get(lbc_stack.https + path, verify=False, timeout=10)
    (lbc,) = lbc_stack.containers("lbc")
    deadline = time.monotonic() + BAN_WAIT_S
    while b"Ignore " not in lbc.logs(since=int(time.time()) - 60) and time.monotonic() < deadline:
        time.sleep(0.5)
    ignored = lbc.logs(since=int(time.time()) - 60).decode(errors="replace")
    assert any(f"Ignore {gateway} by ip" in ignored for gateway in gateways), "fail2ban did not see the probes"
    assert lbc_stack.get("/api/health/").status_code == 200
    assert not gateways & {address for held in bans(lbc_stack).values() for address in held}


def test_fail2ban_is_started_again_when_it_dies(lbc_stack: Stack) -> None:
    code, out = lbc_exec(lbc_stack, "kill -9 $(cat /run/fail2ban/fail2ban.pid) && sleep 0.2 && lbc-health")
    assert code != 0 and "fail2ban is not running" in out  # the health check notices at once
    deadline = time.monotonic() + 30
    while lbc_exec(lbc_stack, "lbc-health")[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lbc_exec(lbc_stack, "lbc-health")[0] == 0
    assert lbc_exec(lbc_stack, "fail2ban-client ping")[1].strip() == "Server replied: pong"


def test_the_log_fail2ban_reads_is_kept_small(lbc_stack: Stack) -> None:
    log = "/var/log/deploystack/fail2ban.log"
    assert lbc_exec(lbc_stack, f"truncate -s 9M {log}")[0] == 0
    deadline = time.monotonic() + 20
    while lbc_exec(lbc_stack, f"test $(stat -c %s {log}) -lt 1000000")[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lbc_exec(lbc_stack, f"test $(stat -c %s {log}) -lt 1000000 && test -s {log}.1")[0] == 0
    requests.get(lbc_stack.https + "/api/health/?after-rotation", verify=False, timeout=10)
    deadline = time.monotonic() + 10  # nginx writes into the new file after its reopen
    while lbc_exec(lbc_stack, f"grep -q after-rotation {log}")[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lbc_exec(lbc_stack, f"grep -q after-rotation {log}")[0] == 0
