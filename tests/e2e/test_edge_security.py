"""The edge of a running stack (issue 14): uploaded files are never pages of the site, a client that
bursts gets 429 while another passes, no response names a container, Django refuses to run without a
secret key.

A small stack of its own (the demo's backend alone, routed at /, with low limits and the Docker address
ranges as trusted proxies): every request from the host reaches the LBC from a network gateway, so the
only way two clients on 127.0.0.1 can be told apart is X-Forwarded-For from a trusted proxy, which is
what `lbc.trusted_proxies` is for.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import docker
import pytest
import requests

from deploystack.testing import StackUnderTest
from tests.conftest import BLUEPRINTS
from tests.e2e.conftest import Stack

SPEC = f"""\
project: edge
apc:
  apps:
    backend:
      source: {BLUEPRINTS / "default" / "apps" / "backend"}
      wsgi: backend.wsgi:application
      workers: 1
      routes: [/]
lbc:
  # Docker's address pools: the host's requests come from a gateway in one of them.
  trusted_proxies: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]
  limits: {{rate: 2, burst: 10, connections: 20, admin_login_rate: 1, admin_login_burst: 2}}
acc: {{redis: false, memcached: false, rabbitmq: false}}
dbc: {{replicas: 0}}
"""
BURST = 40  # requests one client sends at once: 10 of burst (plus what 2 r/s refills) pass
CLIENT_A, CLIENT_B = "198.51.100.7", "198.51.100.8"  # documentation addresses (RFC 5737)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("edge")
    (root / "deploystack.yaml").write_text(SPEC)
    with StackUnderTest(root / "deploystack.yaml") as under_test:
        yield Stack(under_test, docker.from_env())


def upload(stack: Stack, body: bytes, content_type: str) -> str:
    created = requests.post(stack.https + "/api/media/", data=body, headers={"Content-Type": content_type},
                            verify=False, timeout=30)
    assert created.status_code == 201, created.text
    return str(created.json()["url"])


@pytest.mark.parametrize(("content_type", "disposition"), [
    ("text/html", "attachment"),
    ("image/svg+xml", "attachment"),  # an image that can carry script
    ("application/javascript", "attachment"),
    ("image/png", None),
    ("video/mp4", None),
    ("application/pdf", None),
])
def test_uploaded_files_are_never_pages_of_the_site(edge: Stack, content_type: str, disposition: str | None) -> None:
    body = b"<html><script>alert(document.cookie)</script></html>"
    served = edge.get(upload(edge, body, content_type))
    assert served.status_code == 200 and served.content == body
    assert served.headers["Content-Type"] == content_type  # the stored type, unchanged
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Content-Security-Policy"] == "sandbox"
    assert served.headers.get("Content-Disposition") == disposition
    assert served.headers["X-Request-ID"]  # the server's own headers are still there


def statuses(stack: Stack, path: str, count: int, client: str | None, method: str = "GET") -> list[int]:
    headers = {"X-Forwarded-For": client} if client else {}
    with requests.Session() as session:  # one connection, as fast as the LBC answers
        return [session.request(method, stack.https + path, headers=headers, verify=False, timeout=10).status_code
                for _ in range(count)]


def test_a_burst_from_one_client_gets_429_while_another_passes(edge: Stack) -> None:
    time.sleep(1)  # a full bucket whatever ran before
    bursting = statuses(edge, "/api/health/", BURST, CLIENT_A)
    assert set(bursting) == {200, 429}, bursting
    assert bursting[:10] == [200] * 10  # the burst a page with its assets needs
    assert bursting.count(429) >= BURST - 20
    assert statuses(edge, "/api/health/", 3, CLIENT_B) == [200, 200, 200]
    # The host's own requests (from the gateway, no forwarded client) are not limited, as fail2ban
    # never bans them: load tests and health checks from the host keep working.
    assert set(statuses(edge, "/api/health/", BURST, None)) == {200}


def test_admin_login_posts_are_limited_harder(edge: Stack) -> None:
    time.sleep(1)
    client = "198.51.100.9"
    # GETs of the login page count only against the per-client limit
    assert 429 not in statuses(edge, "/admin/login/", 3, client)
    posts = statuses(edge, "/admin/login/", 6, client, method="POST")
    # one, two of burst, then one a minute (the app answers 404 or 403: it has no admin)
    assert 429 not in posts[:3] and posts[3:] == [429] * 3, posts


def test_no_response_header_names_a_container(edge: Stack) -> None:
    containers = edge.containers()
    ids = {c.id[:12] for c in containers}
    media = upload(edge, b"hello", "text/plain")
    for path in ("/api/health/", "/api/version/", "/static/nowhere.css", media, "/nowhere/"):
        reply = edge.get(path)
        values = " ".join(f"{k}: {v}" for k, v in reply.headers.items())
        assert not [i for i in ids if i in values], f"{path}: {values}"
    (backend,) = edge.containers("backend")
    served_by = edge.get("/api/health/").headers["X-Served-By"]
    assert re.fullmatch(r"backend-1-[0-9a-f]{4}", served_by), served_by
    assert served_by == backend.attrs["Config"]["Hostname"]


def run_backend_image(stack: Stack, command: list[str], environment: dict[str, str]) -> bytes:
    """Run the backend's image with its replica's environment changed by `environment`: its stderr."""
    (backend,) = stack.containers("backend")
    env = dict(e.split("=", 1) for e in backend.attrs["Config"]["Env"]) | environment
    with pytest.raises(docker.errors.ContainerError) as failed:
        stack.docker.containers.run(backend.image.id, command, environment=env, network_mode="none",
                                    remove=True, stderr=True)
    return bytes(failed.value.stderr)


@pytest.mark.parametrize(("environment", "message"), [
    ({"DJANGO_SECRET_KEY": ""}, b"ImproperlyConfigured: DJANGO_SECRET_KEY is empty or not set"),
    ({"DJANGO_SECRET_KEY": "build-only-dummy"}, b"ImproperlyConfigured: DJANGO_SECRET_KEY is 'build-only-dummy'"),
    # the build's flag means nothing at runtime: the entrypoint unsets it
    ({"DJANGO_SECRET_KEY": "", "DEPLOYSTACK_BUILD": "1"}, b"ImproperlyConfigured: DJANGO_SECRET_KEY is empty"),
], ids=["empty", "build-dummy", "build-flag"])
def test_django_refuses_to_start_without_a_secret_key(edge: Stack, environment: dict[str, str],
                                                      message: bytes) -> None:
    # what gunicorn, uWSGI and Celery do first: set Django up from the settings
    assert message in run_backend_image(edge, ["python", "-c", "import django; django.setup()"], environment)


@pytest.mark.parametrize("command", ["serve", "migrate", "worker"])
def test_the_entrypoint_says_the_key_is_missing(edge: Stack, command: str) -> None:
    stderr = run_backend_image(edge, [command], {"DJANGO_SECRET_KEY": ""})
    assert b"missing environment variable(s): DJANGO_SECRET_KEY" in stderr, stderr


def test_django_runs_with_the_stack_key_and_https_settings(edge: Stack) -> None:
    code, out = edge.under_test.exec("backend", ["python", "-c",
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.CSRF_TRUSTED_ORIGINS)"])
    assert code == 0, out
    assert out.strip().splitlines()[-1] == f"True True 0 ['https://localhost:{edge.under_test.https_port}']"



def test_up_again_changes_nothing(edge: Stack) -> None:
    """Host names are random per container but no part of its config hash: nothing drifts."""
    result = edge.cli("up")
    assert "nothing changed" in result.stdout, result.stdout + result.stderr
