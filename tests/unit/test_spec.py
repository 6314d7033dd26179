"""The spec: short specs are valid; every bad spec gets exact, located messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploystack.errors import SpecError
from deploystack.spec import load_stack
from tests.conftest import BLUEPRINTS, write_spec

MINIMAL = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
"""


def problems_of(folder: Path, text: str, apps: tuple[str, ...] = ("backend",)) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(folder, text, apps))
    return [str(p) for p in caught.value.problems]


def test_minimal_spec_gets_defaults(spec_dir: Path) -> None:
    stack = load_stack(write_spec(spec_dir, MINIMAL))
    app = stack.apc.apps["backend"]
    assert (app.replicas, app.server, app.settings_module) == (1, "gunicorn", "backend.settings")
    assert stack.lbc.bind == "127.0.0.1"
    assert stack.dbc.replicas == 1
    assert stack.acc.redis.enabled and not stack.acc.elasticsearch.enabled
    assert not stack.cdc.enabled


def test_default_blueprint_is_valid() -> None:
    stack = load_stack(BLUEPRINTS / "default" / "deploystack.yaml")
    assert set(stack.apc.apps) == {"backend", "frontend", "bff"}


def test_bool_shorthand_for_toggles(spec_dir: Path) -> None:
    stack = load_stack(write_spec(spec_dir, MINIMAL + "acc:\n  redis: false\n  memcached: true\n"))
    assert not stack.acc.redis.enabled and stack.acc.memcached.enabled


BAD = [
    pytest.param(MINIMAL.replace("shop", "Shop!"),
                 ["project (line 1): must be lowercase letters, digits, '-' and '_', starting with a letter "
                  "or digit (Compose's rule for project names), at most 48 characters"], id="project-name"),
    pytest.param(MINIMAL + "      replicas: 0\n",
                 ["apc.apps.backend.replicas (line 7): must be ≥ 1 (got 0)"], id="replicas-below-1"),
    pytest.param(MINIMAL + "      replicas: two\n",
                 ["apc.apps.backend.replicas (line 7): must be a whole number (got 'two')"], id="wrong-type"),
    pytest.param(MINIMAL + "      replcas: 2\n",
                 ["apc.apps.backend.replcas (line 7): unknown key (did you mean 'replicas'?)"], id="did-you-mean"),
    pytest.param(MINIMAL + "lbcc: {}\n",
                 ["lbcc (line 7): unknown key (did you mean 'lbc'?)"], id="unknown-top-level"),
    pytest.param(MINIMAL + "      server: daphne\n",
                 ["apc.apps.backend.server (line 7): must be one of 'gunicorn', 'uwsgi' or 'uvicorn' (got 'daphne')"],
                 id="literal"),
    pytest.param(MINIMAL + "dbc:\n  replicas: -1\n",
                 ["dbc.replicas (line 8): must be ≥ 0 (got -1)"], id="db-replicas"),
    pytest.param("project: shop\n", ["apc (line 1): required"], id="missing-apc"),
    pytest.param(MINIMAL + "      routes: [api/]\n",
                 ["apc.apps.backend.routes (line 7): route 'api/' must start and end with '/'"], id="route-form"),
    pytest.param(MINIMAL.replace("backend.wsgi:application", "backend.wsgi"),
                 ["apc.apps.backend.wsgi (line 6): has the wrong form (got 'backend.wsgi'): expected to match "
                  r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"], id="wsgi-form"),
    pytest.param(MINIMAL.replace("apps/backend", "apps/nowhere"),
                 [], id="missing-source"),  # message holds the tmp path: checked below
    pytest.param(MINIMAL + "      replicas: 0\ndbc:\n  replicas: x\nfoo: 1\n",
                 ["apc.apps.backend.replicas (line 7): must be ≥ 1 (got 0)",
                  "dbc.replicas (line 9): must be a whole number (got 'x')",
                  "foo (line 10): unknown key"], id="all-at-once"),
    pytest.param("project: shop\nproject: other\n",
                 ["project (line 2): duplicate key: it is already set above in the same mapping"], id="duplicate-key"),
    pytest.param(MINIMAL + "      replicas: 2\n      replicas: 3\n",
                 ["apc.apps.backend.replicas (line 8): duplicate key: it is already set above in the same mapping"],
                 id="nested-duplicate-key"),
    pytest.param("project: [shop\n",
                 ["(top level) (line 2): YAML syntax error: expected ',' or ']', but got '<stream end>'"],
                 id="syntax"),
    pytest.param("", ["(top level): the spec is empty (deploystack init writes a starter)"], id="empty"),
    pytest.param("- a\n- b\n", ["(top level) (line 1): the spec must be a mapping of keys (project, apc, ...)"],
                 id="not-a-mapping"),
    pytest.param(MINIMAL + "      routes: [/media/uploads/]\n",
                 ["apc.apps.backend.routes[0] (line 7): route '/media/uploads/' is reserved for the media store (mmc)"],
                 id="reserved-route"),
    pytest.param(MINIMAL.replace("backend:", "lbc:"),
                 ["apc.apps (line 3): app name 'lbc' is taken by deploystack"], id="reserved-app-name"),
    pytest.param(MINIMAL + "      git: {url: repos/backend.git}\n",
                 ["apc.apps.backend (line 4): give `source` or `git`, not both: deploys from git ignore a "
                  "local folder"], id="source-and-git"),
    pytest.param(MINIMAL.replace("      source: apps/backend\n", ""),
                 ["apc.apps.backend (line 4): give the app's `source` (a folder) or its `git` repository"],
                 id="no-source"),
    pytest.param(MINIMAL.replace("source: apps/backend", "git: {url: repos/b.git, branch: -x}"),
                 ["apc.apps.backend.git.branch (line 5): '-x' is not a branch name (letters, digits, '.', '_', "
                  "'/' and '-')"], id="git-branch"),
    pytest.param(MINIMAL.replace("source: apps/backend", "git: {url: --upload-pack=x}"),
                 ["apc.apps.backend.git.url (line 5): '--upload-pack=x' is not a repository URL or path"],
                 id="git-url-option"),
    pytest.param(MINIMAL + "cdc:\n  enabled: true\n  branch: 'main branch'\n",
                 ["cdc.branch (line 9): 'main branch' is not a branch name (letters, digits, '.', '_', '/' and "
                  "'-')"], id="cdc-branch"),
    pytest.param(MINIMAL + "dbc:\n  offsite: {name: dr, host: dr.example.org, bind: 0.0.0.0}\n",
                 ["dbc.offsite.bind (line 8): '0.0.0.0' would publish the database on every interface: "
                  "name the one address the other host reaches"], id="offsite-every-interface"),
    pytest.param(MINIMAL + "dbc:\n  offsite:\n    name: dr\n    host: dr.example.org\n    bind: db.local\n",
                 ["dbc.offsite.bind (line 11): 'db.local' is not an IP address of this host"], id="offsite-bind"),
    pytest.param(MINIMAL + "dbc:\n  offsite:\n    name: dr\n    host: 'dr example'\n    bind: 10.0.0.5\n",
                 ["dbc.offsite.host (line 10): 'dr example' is not a DNS name or an IP address"],
                 id="offsite-host"),
    pytest.param(MINIMAL + "dbc:\n  offsite:\n    name: DR\n    host: 10.0.0.9\n    bind: 10.0.0.5\n",
                 ["dbc.offsite.name (line 9): has the wrong form (got 'DR'): expected to match "
                  "^[a-z][a-z0-9_]{0,30}$"], id="offsite-name"),
    pytest.param(MINIMAL + "dbc:\n  offsite:\n    name: dr\n    bind: 10.0.0.5\n",
                 ["dbc.offsite.host (line 8): required"], id="offsite-host-missing"),
    # Values printed into nginx.conf, jail.local, postgresql.conf, Redis/RabbitMQ settings: an injection
    # (a newline, a tab, `;{}`) or a value out of bounds is refused before anything is written.
    pytest.param('domain: "shop.example.org\\n  location / {}"\n' + MINIMAL,
                 ["domain (line 1): 'shop.example.org\\n  location / {}' is not a host name (letters, digits, "
                  "'-' and '.', e.g. shop.example.org)"], id="domain-newline"),
    pytest.param(MINIMAL + '      routes: ["/api\\t/"]\n',
                 ["apc.apps.backend.routes (line 7): route '/api\\t/' may hold only letters, digits and '.', "
                  "'_', '~', '/', '-'"], id="route-tab"),
    pytest.param(MINIMAL + '      routes: ["/api/;{}/"]\n',
                 ["apc.apps.backend.routes (line 7): route '/api/;{}/' may hold only letters, digits and '.', "
                  "'_', '~', '/', '-'"], id="route-braces"),
    pytest.param(MINIMAL + 'dbc:\n  shared_buffers: "128MB\\nfsync = off"\n',
                 ["dbc.shared_buffers (line 8): '128MB\\nfsync = off' is not a size: a number and a unit "
                  "('kB', 'MB', 'GB'), e.g. 128MB"], id="shared-buffers-newline"),
    pytest.param(MINIMAL + "dbc:\n  shared_buffers: 512GB\n",
                 ["dbc.shared_buffers (line 8): '512GB' is out of range: between 128 KiB and 256 GiB"],
                 id="shared-buffers-bound"),
    pytest.param(MINIMAL + "dbc:\n  max_connections: 100000\n",
                 ["dbc.max_connections (line 8): must be ≤ 10000 (got 100000)"], id="max-connections-bound"),
    pytest.param(MINIMAL + "lbc:\n  bind: banana\n",
                 ["lbc.bind (line 8): 'banana' is not an IP address (e.g. 127.0.0.1, 0.0.0.0 or ::1)"],
                 id="lbc-bind"),
    pytest.param(MINIMAL + "lbc:\n  client_max_body_size: 100g\n",
                 ["lbc.client_max_body_size (line 8): '100g' is out of range: between 1 KiB and 16 GiB"],
                 id="body-size-bound"),
    pytest.param(MINIMAL + "lbc:\n  client_max_body_size: '10m; return 200'\n",
                 ["lbc.client_max_body_size (line 8): '10m; return 200' is not a size: a number and a unit "
                  "('k', 'm', 'g'), e.g. 10m"], id="body-size-injection"),
    pytest.param(MINIMAL + "lbc:\n  proxy_read_timeout: 86400\n",
                 ["lbc.proxy_read_timeout (line 8): must be ≤ 3600 (got 86400)"], id="read-timeout-bound"),
    pytest.param(MINIMAL + "lbc:\n  trusted_proxies: [cdn]\n",
                 ["lbc.trusted_proxies (line 8): 'cdn' is not an IP address or network (e.g. 203.0.113.7 or "
                  "10.0.0.0/8)"], id="trusted-proxies"),
    pytest.param(MINIMAL + 'lbc:\n  trusted_proxies: ["fe80::1%x;}"]\n  fail2ban: {ignoreip: ["fe80::1%a\\nb"]}\n',
                 ["lbc.trusted_proxies (line 8): 'fe80::1%x;}' is not an IP address or network (e.g. 203.0.113.7 "
                  "or 10.0.0.0/8)",
                  "lbc.fail2ban.ignoreip (line 9): 'fe80::1%a\\nb' is not an IP address or network (e.g. "
                  "203.0.113.7 or 10.0.0.0/8)"], id="ipv6-scope-injection"),
    pytest.param(MINIMAL + "dbc:\n  offsite: {name: dr, host: 'fe80::1%x;}', bind: 10.0.0.5}\n",
                 ["dbc.offsite.host (line 8): 'fe80::1%x;}' is not a DNS name or an IP address"],
                 id="offsite-host-scope"),
    pytest.param(MINIMAL + "lbc:\n  bind: 'fe80::1%eth0'\n",
                 ["lbc.bind (line 8): 'fe80::1%eth0' is not an IP address (e.g. 127.0.0.1, 0.0.0.0 or ::1)"],
                 id="bind-scope"),
    pytest.param(MINIMAL + "lbc:\n  limits: {rate: 0, connections: 1000000}\n",
                 ["lbc.limits.rate (line 8): must be ≥ 1 (got 0)",
                  "lbc.limits.connections (line 8): must be ≤ 100000 (got 1000000)"], id="limits-bounds"),
    pytest.param(MINIMAL + "lbc:\n  fail2ban: {bantime: 99999999d}\n",
                 ["lbc.fail2ban.bantime (line 8): has the wrong form (got '99999999d'): expected to match "
                  "^[0-9]{1,6}[smhdw]?$"], id="bantime-bound"),
    pytest.param(MINIMAL + "acc:\n  rabbitmq: {vhost: a/b, user: 'x y'}\n",
                 ["acc.rabbitmq.vhost (line 8): 'a/b' must be 1 to 64 letters, digits, '_', '.' or '-'",
                  "acc.rabbitmq.user (line 8): 'x y' must be 1 to 64 letters, digits, '_', '.' or '-'"],
                 id="rabbitmq-names"),
    pytest.param(MINIMAL + "acc:\n  redis: {maxmemory: \"1mb\\nrename-command\"}\n",
                 ["acc.redis.maxmemory (line 8): '1mb\\nrename-command' is not a size: a number and a unit "
                  "('kb', 'mb', 'gb'), e.g. 256mb"], id="redis-maxmemory"),
    pytest.param(MINIMAL + "acc:\n  redis: {memory: 1m}\n",
                 ["acc.redis.memory (line 8): '1m' is out of range: between 6 MiB and 512 GiB"], id="memory-bound"),
    pytest.param(MINIMAL + "acc:\n  elasticsearch: {image: 'x; rm -rf /'}\n",
                 ["acc.elasticsearch.image (line 8): 'x; rm -rf /' is not an image reference (e.g. "
                  "registry.example.org/team/name:1.2)"], id="elasticsearch-image"),
    pytest.param(MINIMAL + "mmc:\n  minio_image: Minio/Minio\n",
                 ["mmc.minio_image (line 8): 'Minio/Minio' is not an image reference (e.g. "
                  "registry.example.org/team/name:1.2)"], id="minio-image"),
    pytest.param(MINIMAL + "      settings: 'x;y'\n",
                 ["apc.apps.backend.settings (line 7): 'x;y' is not a Python module path (e.g. shop.settings)"],
                 id="settings-module"),
    pytest.param(MINIMAL + "lbc:\n  bind: 0.0.0.0\n  ports: {https: 8443}\n"
                 "dbc:\n  offsite: {name: dr, host: 10.0.0.9, bind: 10.0.0.5, port: 8443}\n",
                 ["dbc.offsite.port (line 11): port 8443 on 10.0.0.5 is already the LBC's"], id="offsite-lbc-port"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_specs_report_field_line_and_message(spec_dir: Path, text: str, expected: list[str]) -> None:
    found = problems_of(spec_dir, text)
    if expected:
        assert found == expected
    else:
        assert found == [f"apc.apps.backend.source (line 5): no Django project at {spec_dir}/apps/nowhere "
                         "(manage.py not found)"]


def test_config_values_that_are_fine(spec_dir: Path) -> None:
    text = ("domain: shop.example.org\n" + MINIMAL + "      routes: [/api/v2/, /~me/, /]\n"
            "lbc: {bind: '::1', client_max_body_size: 512k, trusted_proxies: [10.0.0.0/8, 2001:db8::/32]}\n"
            "dbc: {shared_buffers: 1GB}\nacc:\n  redis: {maxmemory: 64mb, memory: 1g}\n"
            "  elasticsearch: {image: 'registry.local:5000/es/es:8.15.0'}\nmmc: {minio_image: minio/minio:latest}\n")
    stack = load_stack(write_spec(spec_dir, text))
    assert stack.apc.apps["backend"].routes == ["/api/v2/", "/~me/", "/"]
    assert (stack.lbc.bind, stack.dbc.shared_buffers) == ("::1", "1GB")


def test_overlapping_routes_between_apps(spec_dir: Path) -> None:
    text = MINIMAL + """\
      routes: [/api/, /]
    shop:
      source: apps/shop
      wsgi: shop.wsgi:application
      routes: [/shop/, /api/]
"""
    assert problems_of(spec_dir, text, apps=("backend", "shop")) == [
        "apc.apps.shop.routes[1] (line 11): route '/api/' is already routed to app 'backend'"
    ]


ASGI = MINIMAL.replace("wsgi: backend.wsgi:application", "asgi: backend.asgi:application")


def test_asgi_alone_means_uvicorn(spec_dir: Path) -> None:
    stack = load_stack(write_spec(spec_dir, ASGI + "      routes: [/]\n      websocket_routes: [/ws/]\n"))
    app = stack.apc.apps["backend"]
    assert (app.server, app.asgi, app.wsgi, app.websocket_routes) == ("uvicorn", "backend.asgi:application",
                                                                      None, ["/ws/"])
    assert (app.entry_point, app.package, app.settings_module) == ("backend.asgi:application", "backend",
                                                                   "backend.settings")
    assert stack.lbc.websocket_timeout == 3600


SERVERS = [
    pytest.param(ASGI + "      server: gunicorn\n",
                 ["apc.apps.backend (line 4): server 'gunicorn' runs WSGI apps: give `wsgi`, or `server: uvicorn` "
                  "for `asgi`"], id="asgi-on-gunicorn"),
    pytest.param(MINIMAL + "      server: uvicorn\n",
                 ["apc.apps.backend (line 4): server 'uvicorn' runs ASGI apps: give `asgi: module:app` "
                  "(Django: <project>.asgi:application) instead of `wsgi`"], id="wsgi-on-uvicorn"),
    pytest.param(MINIMAL + "      asgi: backend.asgi:application\n",
                 ["apc.apps.backend (line 4): give `wsgi` or `asgi`, not both: one app runs one server"],
                 id="both"),
    pytest.param(MINIMAL.replace("      wsgi: backend.wsgi:application\n", ""),
                 ["apc.apps.backend (line 4): give the app's `wsgi` (module:callable, served by gunicorn or "
                  "uwsgi) or its `asgi` (served by uvicorn)"], id="neither"),
    pytest.param(ASGI.replace("backend.asgi:application", "backend.asgi"),
                 ["apc.apps.backend.asgi (line 6): has the wrong form (got 'backend.asgi'): expected to match "
                  r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"], id="asgi-form"),
    pytest.param(MINIMAL + "      websocket_routes: [/ws/]\n",
                 ["apc.apps.backend (line 4): websocket_routes need an ASGI app (`asgi:` with server uvicorn): "
                  "a WSGI server cannot hold a websocket"], id="websockets-on-wsgi"),
    pytest.param(ASGI + "      websocket_routes: [ws/]\n",
                 ["apc.apps.backend.websocket_routes (line 7): route 'ws/' must start and end with '/'"],
                 id="websocket-route-form"),
    pytest.param(ASGI + "      routes: [/ws/]\n      websocket_routes: [/ws/]\n",
                 ["apc.apps.backend (line 4): route '/ws/' is in both routes and websocket_routes: list it once "
                  "(websocket_routes are routed to the app too)"], id="route-twice"),
    pytest.param(ASGI + "      websocket_routes: [/_lbc/ws/]\n",
                 ["apc.apps.backend.websocket_routes[0] (line 7): route '/_lbc/ws/' is reserved for the LBC's "
                  "health check"], id="websocket-route-reserved"),
    pytest.param(ASGI + "lbc:\n  websocket_timeout: 0\n",
                 ["lbc.websocket_timeout (line 8): must be ≥ 1 (got 0)"], id="websocket-timeout"),
]


@pytest.mark.parametrize(("text", "expected"), SERVERS)
def test_entry_point_and_server_must_fit(spec_dir: Path, text: str, expected: list[str]) -> None:
    assert problems_of(spec_dir, text) == expected


def test_a_websocket_route_of_one_app_is_not_another_apps_route(spec_dir: Path) -> None:
    text = ASGI + """\
      websocket_routes: [/live/]
    shop:
      source: apps/shop
      wsgi: shop.wsgi:application
      routes: [/live/]
"""
    assert problems_of(spec_dir, text, apps=("backend", "shop")) == [
        "apc.apps.shop.routes[0] (line 11): route '/live/' is already routed to app 'backend'"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_stack(tmp_path / "nope.yaml")
    assert [str(p) for p in caught.value.problems] == [
        f"(top level): spec file {tmp_path}/nope.yaml not found (deploystack init writes one)"
    ]


def test_an_app_from_git_needs_no_folder(spec_dir: Path) -> None:
    stack = load_stack(write_spec(spec_dir, MINIMAL.replace("source: apps/backend",
                                                            "git: {url: repos/backend.git, branch: main}")))
    app = stack.apc.apps["backend"]
    assert app.source is None and app.git is not None and (app.git.url, app.git.branch) == ("repos/backend.git", "main")
