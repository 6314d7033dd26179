"""Planning is pure: a Stack gives the same ProjectPlan every time, with the topology DESIGN.md fixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploystack.plan import build_plan
from deploystack.plan.model import Service
from deploystack.plan.project import CycleError, start_order
from deploystack.spec import Stack, load_stack
from tests.conftest import BLUEPRINTS


@pytest.fixture(scope="module")
def demo() -> Stack:
    return load_stack(BLUEPRINTS / "default" / "deploystack.yaml")


def test_services_of_the_default_blueprint(demo: Stack) -> None:
    names = [s.name for s in build_plan(demo).services]
    assert set(names) == {
        "db-primary", "db-replica-1", "redis", "memcached", "rabbitmq", "media",
        "backend-migrate", "backend", "backend-worker", "frontend-migrate", "frontend", "bff-migrate", "bff",
        "cdc", "cdc-runner", "lbc",
    }
    # dependencies first: the LBC last, each app after its migration job, replicas after the primary
    assert names[-1] == "lbc"
    assert names.index("backend-migrate") < names.index("backend")
    assert names.index("db-primary") < names.index("db-replica-1")


def test_only_the_lbc_publishes_ports_and_joins_public(demo: Stack) -> None:
    plan = build_plan(demo)
    published = {s.name: s.ports for s in plan.services if s.ports}
    assert list(published) == ["lbc"]
    assert [(p.host_ip, p.host_port, p.container_port) for p in published["lbc"]] == [
        ("127.0.0.1", 8080, 80), ("127.0.0.1", 8443, 443)]
    on_public = [s.name for s in plan.services if "public" in s.networks]
    assert on_public == ["lbc"]
    assert {n.name: n.internal for n in plan.networks} == {"public": False, "private": True, "hooks": True,
                                                           "egress": False}
    assert [s.name for s in plan.services if "egress" in s.networks] == ["cdc-runner"]
    assert [s.name for s in plan.services if "hooks" in s.networks] == ["cdc", "lbc"]


def test_upstreams_list_every_replica_and_routes_longest_first(demo: Stack) -> None:
    plan = build_plan(demo)
    (nginx,) = [c for c in plan.configs if c.path == "config/lbc/nginx.conf"]
    assert nginx.context["upstreams"] == [
        {"name": "backend", "servers": ["demo-backend-1:8000", "demo-backend-2:8000"]},
        {"name": "frontend", "servers": ["demo-frontend-1:8000", "demo-frontend-2:8000"]},
        {"name": "bff", "servers": ["demo-bff-1:8000"]},
    ]
    assert [r["prefix"] for r in nginx.context["routes"]] == ["/api/", "/bff/", "/"]  # type: ignore[union-attr]


def test_app_environment_refers_to_secrets_and_peers(demo: Stack) -> None:
    env = dict(build_plan(demo).service("bff").environment)
    assert (env["DB_NAME"], env["DB_USER"], env["DB_PASSWORD"]) == ("bff", "bff", "${DB_PASSWORD_BFF}")
    assert env["DJANGO_SECRET_KEY"] == "${DJANGO_SECRET_KEY_BFF}"
    assert env["DB_REPLICAS"] == "db-replica-1"
    assert env["APC_BACKEND_URL"] == "http://backend:8000"
    assert env["CELERY_BROKER_URL"] == "amqp://bff:${RABBITMQ_PASSWORD_BFF}@rabbitmq:5672/bff"
    assert env["DJANGO_SETTINGS_MODULE"] == "bff.settings"


def test_user_env_is_last_and_escaped(tmp_path: Path) -> None:
    from tests.conftest import write_spec

    spec = write_spec(tmp_path, """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
      env: {DJANGO_DEBUG: "1", PRICE: "$5"}
""")
    env = dict(build_plan(load_stack(spec)).service("backend").environment)
    assert env["DJANGO_DEBUG"] == "1"
    assert env["PRICE"] == "$$5"


def test_replica_count_and_slots(tmp_path: Path) -> None:
    from tests.conftest import write_spec

    spec = write_spec(tmp_path, "project: shop\napc:\n  apps:\n    backend:\n      source: apps/backend\n"
                                "      wsgi: backend.wsgi:application\n      migrate: false\ndbc:\n  replicas: 3\n")
    plan = build_plan(load_stack(spec))
    assert "REPLICA_SLOTS" not in dict(plan.service("db-primary").environment), "replicas make their own slots"
    assert dict(plan.service("db-replica-3").environment)["REPLICA_SLOT"] == "replica_3"
    assert "backend-migrate" not in [s.name for s in plan.services]


def test_a_dependency_cycle_is_its_own_error() -> None:
    a = Service(name="a", role="acc", build=None, depends_on=("b",))
    b = Service(name="b", role="acc", build=None, depends_on=("a",))
    with pytest.raises(CycleError, match="loop"):
        start_order([a, b])


def test_an_asgi_app_gets_uvicorn_and_its_entry_point(tmp_path: Path) -> None:
    from tests.conftest import write_spec

    spec = write_spec(tmp_path, """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
      server: uwsgi
    chat:
      source: apps/chat
      asgi: chat.asgi:application
      websocket_routes: [/ws/]
""", apps=("backend", "chat"))
    plan = build_plan(load_stack(spec))
    chat, backend = plan.service("chat"), plan.service("backend")
    env = dict(chat.environment)
    assert (env["APP_ASGI"], env["APP_SERVER"], env["DJANGO_SETTINGS_MODULE"]) == (
        "chat.asgi:application", "uvicorn", "chat.settings")
    assert "APP_WSGI" not in env and "APP_ASGI" not in dict(backend.environment)
    # The image's builder installs the app server beside the app's dependencies (compose/apc/Dockerfile.j2).
    assert chat.build is not None and chat.build.app_image is not None
    assert backend.build is not None and backend.build.app_image is not None
    assert chat.build.app_image.server_packages == (
        "uvicorn>=0.30,<1", "websockets>=13,<18", "httptools>=0.6,<1", "uvloop>=0.19,<1")
    assert backend.build.app_image.server_packages == ("uwsgi>=2.0.26,<2.1",)  # built in the builder stage
    assert dict(plan.service("chat-migrate").environment)["APP_ASGI"] == "chat.asgi:application"


@pytest.mark.parametrize(("lbc", "tls", "origin"), [
    ("", "self-signed", "https://shop.example.org"),
    ("lbc: {ports: {https: 8443}, tls: acme, acme_email: ops@example.org}\n", "acme", "https://shop.example.org:8443"),
])
def test_app_environment_tells_django_the_tls_mode_and_site_origin(tmp_path: Path, lbc: str, tls: str,
                                                                     origin: str) -> None:
    from tests.conftest import write_spec

    spec = write_spec(tmp_path, "project: shop\ndomain: shop.example.org\n" + lbc + """\
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
""")
    env = dict(build_plan(load_stack(spec)).service("backend").environment)
    assert (env["DEPLOYSTACK_TLS"], env["DJANGO_CSRF_TRUSTED_ORIGINS"]) == (tls, origin)
