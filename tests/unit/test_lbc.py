"""The LBC's settings: spec fields, the plan's nginx/fail2ban/TLS context, the rendered nginx.conf and
jail.local. Pure, except the last tests, which run the filters and the rendered files through fail2ban
and nginx inside the built lbc image (skipped when the image is not built: `deploystack build`)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from deploystack.engine import lbc as engine_lbc
from deploystack.errors import SpecError, UsageError
from deploystack.operations import Session, Target
from deploystack.operations.swarm import export_swarm
from deploystack.plan import lbc as plan
from deploystack.plan.model import Mount
from deploystack.render.project import Rendered
from deploystack.spec import Stack, load_stack
from tests.conftest import BLUEPRINTS, write_spec

MINIMAL = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
      routes: [/]
"""


def stack_with(folder: Path, lbc: str = "", extra: str = "") -> Stack:
    return load_stack(write_spec(folder, MINIMAL + (f"lbc:\n{lbc}" if lbc else "") + extra))


def problems_of(folder: Path, lbc: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        stack_with(folder, lbc)
    return [str(p) for p in caught.value.problems]


@pytest.fixture
def blueprint(tmp_path: Path) -> Path:
    shutil.copytree(BLUEPRINTS / "default", tmp_path / "default",
                    ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__", "stack"))
    return tmp_path / "default" / "deploystack.yaml"


def edit(spec: Path, lbc: dict[str, object]) -> None:
    yaml = YAML()
    data = yaml.load(spec)
    data["lbc"].update(lbc)
    yaml.dump(data, spec)


def rendered_of(spec: Path, tmp_path: Path) -> Rendered:
    ca = tmp_path / "empty-ca.crt"
    ca.write_bytes(b"")
    return Session(Target(spec, spec.parent / "stack"), ca_bundle=ca).rendered


def text(rendered: Rendered, path: str) -> str:
    return rendered.files[path].data.decode()


# -- the spec ------------------------------------------------------------------------------------------

def test_defaults(spec_dir: Path) -> None:
    lbc = stack_with(spec_dir).lbc
    assert (lbc.tls, lbc.connect_timeout_ms, lbc.proxy_read_timeout) == ("self-signed", 250, 30)
    f2b = lbc.fail2ban
    assert (f2b.enabled, f2b.maxretry, f2b.findtime, f2b.bantime, f2b.ignoreip) == (True, 5, "10m", "1h", [])
    assert f2b.admin_login == "/admin/login/"


@pytest.mark.parametrize(("lbc", "expected"), [
    pytest.param("  tls: files\n", [
        "lbc.cert_file (line 8): required when tls is 'files' (a path relative to the spec file)",
        "lbc.key_file (line 8): required when tls is 'files' (a path relative to the spec file)",
    ], id="files-without-paths"),
    pytest.param("  tls: files\n  cert_file: site.crt\n  key_file: tls/site.key\n", [
        "lbc.cert_file (line 10): 'site.crt': keep the certificate and key in a folder of their own, "
        "e.g. tls/site.crt (the LBC mounts that folder read-only)",
    ], id="files-in-the-spec-folder"),
    pytest.param("  tls: files\n  cert_file: tls/my site.crt\n  key_file: tls/site.key\n", [
        "lbc.cert_file (line 10): 'tls/my site.crt' must end in a file name of letters, digits, "
        "'.', '_', '+' or '-'",
    ], id="odd-file-name"),
    pytest.param("  cert_file: tls/site.crt\n", [
        "lbc.cert_file (line 9): only used when tls is 'files' (tls is 'self-signed')",
    ], id="cert-without-files"),
    pytest.param("  tls: acme\n", [
        "lbc.acme_email (line 8): required when tls is 'acme' (Let's Encrypt sends expiry notices there)",
    ], id="acme-without-email"),
    pytest.param("  tls: acme\n  acme_email: nobody\n", [
        "lbc.acme_email (line 10): 'nobody' is not an e-mail address",
    ], id="acme-bad-email"),
    pytest.param("  tls: letsencrypt\n", [
        "lbc.tls (line 9): must be one of 'self-signed', 'files' or 'acme' (got 'letsencrypt')",
    ], id="tls-mode"),
    pytest.param("  connect_timeout_ms: 5\n", [
        "lbc.connect_timeout_ms (line 9): must be ≥ 10 (got 5)",
    ], id="connect-timeout"),
    pytest.param("  fail2ban:\n    ignoreip: [10.0.0.0/8, gateway]\n    findtime: 10 minutes\n", [
        "lbc.fail2ban.ignoreip (line 10): 'gateway' is not an IP address or network (e.g. 203.0.113.7 or "
        "10.0.0.0/8)",
        "lbc.fail2ban.findtime (line 11): has the wrong form (got '10 minutes'): expected to match "
        "^[0-9]{1,6}[smhdw]?$",
    ], id="fail2ban-fields"),
    pytest.param("  fail2ban:\n    admin_login: /admin/login/\"; evil\n", [
        "lbc.fail2ban.admin_login (line 10): has the wrong form (got '/admin/login/\"; evil'): expected to "
        "match ^/[A-Za-z0-9._~/-]{0,200}$",
    ], id="admin-login-path"),
])
def test_bad_lbc_settings(spec_dir: Path, lbc: str, expected: list[str]) -> None:
    assert problems_of(spec_dir, lbc) == expected


# -- the plan ------------------------------------------------------------------------------------------

def test_default_context_timeouts_tls_and_fail2ban(spec_dir: Path) -> None:
    stack = stack_with(spec_dir)
    service, volumes, conf = plan.plan_lbc(stack, None)
    ctx = conf.context
    assert (ctx["connect_timeout"], ctx["proxy_read_timeout"], ctx["proxy_send_timeout"]) == ("250ms", "30s", "30s")
    assert ctx["tls"] == {"certificate": "/etc/deploystack-certs/tls.crt", "key": "/etc/deploystack-certs/tls.key",
                          "hsts_max_age": None, "acme_webroot": None}
    assert ctx["fail2ban_log"] == "/var/log/deploystack/fail2ban.log"
    assert "application/json" in str(ctx["gzip_types"]) and "text/css" in str(ctx["gzip_types"])
    # self-signed: DOMAIN, the certificate volume and fail2ban's database (bans outlive a recreation)
    assert service.environment == (("DOMAIN", "localhost"),)
    assert service.mounts == (Mount("lbc-certs", "/etc/deploystack-certs"), Mount("lbc-fail2ban", "/var/lib/fail2ban"))
    assert volumes == ["lbc-certs", "lbc-fail2ban"]
    assert "NET_ADMIN" in service.cap_add and service.reload == ("lbc-reload",)


def test_jail_context_comes_from_the_spec(spec_dir: Path) -> None:
    stack = stack_with(spec_dir, "  fail2ban:\n    maxretry: 3\n    findtime: 5m\n    bantime: 1d\n"
                                 "    ignoreip: [203.0.113.7, 10.8.0.0/16]\n    admin_login: /site-admin/login/\n")
    (jail,) = plan.fail2ban_configs(stack)
    assert jail.path == "config/lbc/jail.local"
    ctx = jail.context
    assert (ctx["maxretry"], ctx["findtime"], ctx["bantime"]) == (3, "5m", "1d")
    assert ctx["ignoreip"] == "127.0.0.1/8 ::1 203.0.113.7 10.8.0.0/16"
    assert ctx["logpath"] == "/var/log/deploystack/fail2ban.log"
    # no CDC in this spec: no CDC jail; the admin path reaches the filter regex-escaped
    assert [(j["name"], j["filter"]) for j in ctx["jails"]] == [  # type: ignore[attr-defined]
        ("deploystack-scanners", "deploystack-scanners"),
        ("deploystack-django-admin", r'deploystack-django-admin[admin_login="/site\-admin/login/"]'),
    ]


def test_cdc_jail_only_with_a_cdc(spec_dir: Path) -> None:
    stack = stack_with(spec_dir, extra="cdc: true\n")
    (jail,) = plan.fail2ban_configs(stack)
    assert "deploystack-cdc" in [j["name"] for j in jail.context["jails"]]  # type: ignore[attr-defined]


def test_fail2ban_off_means_no_jail_and_no_log_file(spec_dir: Path) -> None:
    stack = stack_with(spec_dir, "  fail2ban: false\n")
    assert plan.fail2ban_configs(stack) == []
    assert plan.plan_lbc(stack, None)[2].context["fail2ban_log"] is None


@pytest.mark.parametrize(("project_dir", "cert", "key", "mounts", "paths"), [
    pytest.param("..", "tls/site.crt", "tls/site.key",
                 [Mount("../tls", "/etc/deploystack-tls", bind=True, read_only=True)],
                 ("/etc/deploystack-tls/site.crt", "/etc/deploystack-tls/site.key"), id="one-folder"),
    pytest.param(".", "certs/chain.pem", "keys/key.pem",
                 [Mount("./certs", "/etc/deploystack-tls/cert", bind=True, read_only=True),
                  Mount("./keys", "/etc/deploystack-tls/key", bind=True, read_only=True)],
                 ("/etc/deploystack-tls/cert/chain.pem", "/etc/deploystack-tls/key/key.pem"), id="two-folders"),
    pytest.param("..", "/etc/ssl/site/fullchain.pem", "/etc/ssl/site/privkey.pem",
                 [Mount("/etc/ssl/site", "/etc/deploystack-tls", bind=True, read_only=True)],
                 ("/etc/deploystack-tls/fullchain.pem", "/etc/deploystack-tls/privkey.pem"), id="absolute"),
])
def test_tls_files_are_mounted_read_only_by_folder(spec_dir: Path, project_dir: str, cert: str, key: str,
                                                   mounts: list[Mount], paths: tuple[str, str]) -> None:
    stack = stack_with(spec_dir, f"  tls: files\n  cert_file: {cert}\n  key_file: {key}\n")
    service, _, conf = plan.plan_lbc(stack, None, project_dir)
    assert list(service.mounts[2:]) == mounts
    tls = conf.context["tls"]
    assert (tls["certificate"], tls["key"]) == paths  # type: ignore[index]
    assert tls["hsts_max_age"] == 365 * 24 * 3600  # type: ignore[index]
    assert dict(service.environment) == {"DOMAIN": "localhost", "TLS_MODE": "files",
                                         "TLS_CERT": paths[0], "TLS_KEY": paths[1]}


def test_acme_context(spec_dir: Path) -> None:
    stack = stack_with(spec_dir, "  tls: acme\n  acme_email: ops@example.org\n", "domain: shop.example.org\n")
    service, _, conf = plan.plan_lbc(stack, None)
    assert dict(service.environment) == {"DOMAIN": "shop.example.org", "TLS_MODE": "acme",
                                         "ACME_EMAIL": "ops@example.org", "ACME_STAGING": "0"}
    tls = conf.context["tls"]
    assert tls["acme_webroot"] == "/var/www/acme" and tls["hsts_max_age"]  # type: ignore[index]
    assert tls["certificate"] == "/etc/deploystack-certs/tls.crt"  # type: ignore[index]


# -- rendered files ------------------------------------------------------------------------------------

def test_rendered_nginx_conf_of_the_default_blueprint(blueprint: Path, tmp_path: Path) -> None:
    conf = text(rendered_of(blueprint, tmp_path), "config/lbc/nginx.conf")
    for line in (
        "gzip on;", "gzip_proxied any;",
        "keepalive 16;", "keepalive_timeout 60s;",
        "proxy_next_upstream error timeout http_502 http_503;", "proxy_next_upstream_tries 3;",
        "proxy_connect_timeout 250ms;", "proxy_send_timeout 30s;", "proxy_read_timeout 30s;",
        "client_max_body_size 10m;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Request-ID $request_id;", "add_header X-Request-ID $request_id always;",
        "access_log /dev/stdout deploystack;", "access_log /var/log/deploystack/fail2ban.log fail2ban;",
        "log_format fail2ban '$remote_addr [$time_local] \"$request\" $status $body_bytes_sent '",
        "ssl_certificate /etc/deploystack-certs/tls.crt;", "return 301 https://$host:8443$request_uri;",
    ):
        assert line in conf, line
    # a POST that reached a replica is never sent to another; self-signed: no HSTS; no ACME location
    assert "non_idempotent" not in conf.replace("`non_idempotent` is deliberately absent", "")
    assert "Strict-Transport-Security" not in conf
    assert "acme-challenge" not in conf


def add_chat_app(spec: Path) -> None:
    """An ASGI app beside the demo's: /chat/ is plain HTTP, /chat/ws/ and /live/ pass websockets."""
    chat = spec.parent / "apps" / "chat"
    chat.mkdir()
    (chat / "manage.py").write_text("# stand-in\n")
    yaml = YAML()
    data = yaml.load(spec)
    data["apc"]["apps"]["chat"] = {"source": "apps/chat", "asgi": "chat.asgi:application", "routes": ["/chat/"],
                                   "websocket_routes": ["/chat/ws/", "/live/"]}
    data["lbc"]["websocket_timeout"] = 900
    yaml.dump(data, spec)


def locations(conf: str) -> dict[str, list[str]]:
    """The 443 server's `location PREFIX {...}` blocks: their directives, one per line."""
    server = conf.split("listen 443", 1)[1]
    out: dict[str, list[str]] = {}
    for block in server.split("\n        location ")[1:]:
        head, body = block.split(" {\n", 1)
        body = body.split("\n        }", 1)[0]
        out[head] = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
    return out


def test_websocket_routes_pass_upgrades_and_wait_long(blueprint: Path, tmp_path: Path) -> None:
    add_chat_app(blueprint)
    conf = text(rendered_of(blueprint, tmp_path), "config/lbc/nginx.conf")
    assert "    map $http_upgrade $connection_upgrade {\n        default upgrade;\n        \"\" close;\n    }\n" in conf
    server_level = conf.split("listen 443", 1)[1].split("\n        location ", 1)[0]
    # Plain routes: HTTP/1.1 with `Connection ""`, so the upstreams' keepalive pool stays in use.
    assert "proxy_http_version 1.1;" in server_level and 'proxy_set_header Connection "";' in server_level
    assert "proxy_read_timeout 30s;" in server_level and "proxy_set_header Upgrade" not in server_level
    found = locations(conf)
    common = ["proxy_set_header Host $http_host;",
              "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
              "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_set_header X-Real-IP $remote_addr;",
              "proxy_set_header X-Request-ID $request_id;"]
    for prefix in ("/chat/ws/", "/live/"):
        assert found[prefix] == ["proxy_pass http://chat;", "proxy_set_header Upgrade $http_upgrade;",
                                 "proxy_set_header Connection $connection_upgrade;", *common,
                                 "proxy_read_timeout 900s;", "proxy_send_timeout 900s;",
                                 "lingering_close always;"], prefix
    # Every header the plain routes send, a websocket route sends too (it cannot inherit them).
    assert {line for line in server_level.splitlines() if "proxy_set_header" in line and "Connection" not in line} \
        <= {"        " + line for line in common}
    assert found["/chat/"] == ["proxy_pass http://chat;"]
    assert found["/api/"] == ["proxy_pass http://backend;"]
    # Longest prefix first, websocket routes among the others.
    assert [prefix for prefix in found if prefix.startswith("/")][:4] == ["/chat/ws/", "/chat/", "/live/", "/api/"]


def test_websocket_routes_on_swarm_name_the_tasks(blueprint: Path, tmp_path: Path) -> None:
    add_chat_app(blueprint)
    exported = export_swarm(Session(Target.of(blueprint, None)))
    found = locations(exported.files["config/lbc/nginx.conf"].data.decode())
    assert found["/live/"][:4] == ["set $tasks_chat tasks.chat:8000;", "proxy_pass http://$tasks_chat;",
                                   "proxy_set_header Upgrade $http_upgrade;",
                                   "proxy_set_header Connection $connection_upgrade;"]
    assert found["/live/"][-3:] == ["proxy_read_timeout 900s;", "proxy_send_timeout 900s;", "lingering_close always;"]


def location(conf: str, head: str) -> str:
    """The text of one location block of nginx.conf (locations here hold no nested braces but one)."""
    start = conf.index(f"        location {head} {{")
    return conf[start:conf.index("\n        }\n", start)]


def test_rendered_media_is_never_a_page_of_the_site(blueprint: Path, tmp_path: Path) -> None:
    conf = text(rendered_of(blueprint, tmp_path), "config/lbc/nginx.conf")
    media = location(conf, "/media/")
    for line in ("proxy_hide_header Content-Disposition;",
                 "add_header Content-Disposition $media_disposition always;",
                 "add_header X-Content-Type-Options nosniff always;",
                 "add_header Content-Security-Policy sandbox always;",
                 # add_header in a location replaces the server's: they are repeated
                 "add_header X-Request-ID $request_id always;"):
        assert line in media, line
    # the first regex that matches wins: SVG before the other images
    assert ('map $upstream_http_content_type $media_disposition {\n        default attachment;\n'
            '        "~*^image/svg\\+xml" attachment;\n        "~*^(image|audio|video)/" "";\n'
            '        "~*^application/pdf(;|$)" "";\n    }') in conf


def test_rendered_media_location_repeats_hsts(blueprint: Path, tmp_path: Path) -> None:
    tls = blueprint.parent / "tls"
    tls.mkdir()
    edit(blueprint, {"tls": "files", "cert_file": "tls/site.crt", "key_file": "tls/site.key"})
    conf = text(rendered_of(blueprint, tmp_path), "config/lbc/nginx.conf")
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in location(conf, "/media/")
    assert "        proxy_hide_header Strict-Transport-Security;\n" in conf  # Django's own: one header


def test_rendered_limits_of_the_default_blueprint(blueprint: Path, tmp_path: Path) -> None:
    conf = text(rendered_of(blueprint, tmp_path), "config/lbc/nginx.conf")
    for line in (
        "geo $deploystack_unlimited {\n        default 0;\n        127.0.0.0/8 1;\n        ::1 1;\n"
        "        include /run/deploystack-gateways.conf;\n    }",
        "limit_req_zone $limit_client zone=per_client:10m rate=20r/s;",
        "limit_conn_zone $limit_client zone=per_client_conn:10m;",
        "map $request_method $limit_login {\n        POST $limit_client;\n        default \"\";\n    }",
        "limit_req_zone $limit_login zone=admin_login:1m rate=10r/m;",
        "limit_req_status 429;", "limit_conn_status 429;",
        "        limit_req zone=per_client burst=100 nodelay;\n        limit_conn per_client_conn 100;\n",
    ):
        assert line in conf, line
    # the admin login: both limits (a location's limit_req replaces the server's), proxied like its route
    assert location(conf, "= /admin/login/").splitlines()[1:] == [
        "            limit_req zone=per_client burst=100 nodelay;",
        "            limit_req zone=admin_login burst=5 nodelay;",
        "            proxy_pass http://frontend;",
    ]
    assert "set_real_ip_from" not in conf and "real_ip_header" not in conf


def test_rendered_limits_from_the_spec_and_trusted_proxies(blueprint: Path, tmp_path: Path) -> None:
    edit(blueprint, {"limits": {"rate": 5, "burst": 7, "connections": 9, "admin_login_rate": 3,
                                "admin_login_burst": 1},
                     "trusted_proxies": ["203.0.113.0/24", "2001:db8::/32"],
                     "fail2ban": {"admin_login": "/api/admin/login/"}})
    conf = text(rendered_of(blueprint, tmp_path), "config/lbc/nginx.conf")
    for line in ("rate=5r/s;", "limit_req zone=per_client burst=7 nodelay;", "limit_conn per_client_conn 9;",
                 "zone=admin_login:1m rate=3r/m;", "limit_req zone=admin_login burst=1 nodelay;",
                 "    set_real_ip_from 203.0.113.0/24;\n    set_real_ip_from 2001:db8::/32;\n"
                 "    real_ip_header X-Forwarded-For;\n    real_ip_recursive on;\n"):
        assert line in conf, line
    assert "proxy_pass http://backend;" in location(conf, "= /api/admin/login/")


def test_limits_off(blueprint: Path, tmp_path: Path) -> None:
    edit(blueprint, {"limits": {"enabled": False}})
    conf = text(rendered_of(blueprint, tmp_path), "config/lbc/nginx.conf")
    assert "limit_req" not in conf and "limit_conn" not in conf and "= /admin/login/" not in conf


def test_no_admin_login_location_when_no_route_serves_it(spec_dir: Path) -> None:
    stack = load_stack(write_spec(spec_dir, MINIMAL.replace("routes: [/]", "routes: [/api/]")))
    limits = plan.limits_context(stack, plan.routes(stack))
    assert limits is not None and limits["login"] is None


def test_rendered_jail_local_of_the_default_blueprint(blueprint: Path, tmp_path: Path) -> None:
    jail = text(rendered_of(blueprint, tmp_path), "config/lbc/jail.local")
    for line in (
        "[DEFAULT]", "backend = polling", "banaction = iptables-allports", "maxretry = 5", "findtime = 10m",
        "bantime = 1h", "ignoreip = 127.0.0.1/8 ::1 %(deploystack_gateways)s",
        "logpath = /var/log/deploystack/fail2ban.log",
        "[deploystack-scanners]", "filter = deploystack-scanners",
        "[deploystack-django-admin]", 'filter = deploystack-django-admin[admin_login="/admin/login/"]',
        "[deploystack-cdc]", "filter = deploystack-cdc",
    ):
        assert line in jail.splitlines(), line
    assert jail.count("enabled = true") == 3


def test_rendered_tls_files_keeps_the_key_out_of_the_output(blueprint: Path, tmp_path: Path) -> None:
    (blueprint.parent / "tls").mkdir()
    (blueprint.parent / "tls" / "site.key").write_text("-----BEGIN PRIVATE KEY-----\nKEYMATERIAL7f2c\n")
    edit(blueprint, {"tls": "files", "cert_file": "tls/site.crt", "key_file": "tls/site.key"})
    rendered = rendered_of(blueprint, tmp_path)
    assert not any(b"KEYMATERIAL7f2c" in f.data for f in rendered.files.values())
    compose = YAML(typ="safe").load(text(rendered, "compose.yaml"))
    lbc = compose["services"]["lbc"]
    assert {"type": "bind", "source": "../tls", "target": "/etc/deploystack-tls", "read_only": True} in lbc["volumes"]
    conf = text(rendered, "config/lbc/nginx.conf")
    assert "ssl_certificate /etc/deploystack-tls/site.crt;" in conf
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in conf


def test_rendered_acme_serves_the_challenge_before_the_redirect(blueprint: Path, tmp_path: Path) -> None:
    edit(blueprint, {"tls": "acme", "acme_email": "ops@example.org"})
    conf = text(rendered_of(blueprint, tmp_path), "config/lbc/nginx.conf")
    http_server = conf[conf.index("listen 80"):conf.index("listen 443")]
    assert http_server.index("location ^~ /.well-known/acme-challenge/") < http_server.index("return 301")
    assert "root /var/www/acme;" in http_server


# -- engine helpers that need no engine ----------------------------------------------------------------

def test_parse_bans() -> None:
    output = ("jail\tdeploystack-cdc\njail\tdeploystack-scanners\n"
              "ban\tdeploystack-scanners\t192.168.0.7\t2026-01-02 03:04:05\t2026-01-02 04:04:05\n")
    assert engine_lbc.parse_bans(output) == {
        "deploystack-cdc": [],
        "deploystack-scanners": [engine_lbc.Ban("deploystack-scanners", "192.168.0.7", "2026-01-02 03:04:05",
                                                "2026-01-02 04:04:05")],
    }


def test_unban_refuses_what_is_not_an_address() -> None:
    with pytest.raises(UsageError, match=r"^'10\.0\.0' is not an IP address$"):
        engine_lbc.unban(None, "shop", "10.0.0")  # type: ignore[arg-type]  # refused before any Docker call


# -- inside the built lbc image ------------------------------------------------------------------------

def log_line(address: str, request: str, status: int, agent: str, request_id: str) -> str:
    """A line as nginx writes it for fail2ban (log_format fail2ban in compose/lbc/templates/nginx.conf.j2)."""
    return (f'{address} [28/Nov/2026:20:16:32 +0000] "{request}" {status} 153 "{agent}" host="x" '
            f"request_id={request_id}")


SAMPLES = "".join(log_line(*fields) + "\n" for fields in [
    ("203.0.113.7", "GET /wp-login.php HTTP/1.1", 404, "Mozilla/5.0", "a1"),
    ("203.0.113.7", "GET /.env HTTP/1.1", 301, "Mozilla/5.0", "a2"),
    ("203.0.113.7", "GET /app/.env.production HTTP/1.1", 404, "-", "a3"),
    ("203.0.113.7", "GET /phpMyAdmin/index.php?lang=en HTTP/1.1", 404, "-", "a4"),
    ("203.0.113.7", "POST /xmlrpc.php HTTP/1.1", 404, "-", "a5"),
    ("203.0.113.7", "GET /cgi-bin/luci HTTP/1.1", 404, "-", "a6"),
    ("203.0.113.7", "GET /.git/config HTTP/1.1", 404, "-", "a7"),
    ("203.0.113.8", "GET / HTTP/1.1", 200, "sqlmap/1.7.2#stable (https://sqlmap.org)", "a8"),
    ("203.0.113.8", "GET /robots.txt HTTP/1.1", 404, "Mozilla/5.00 (Nikto/2.1.6)", "a9"),
    ("198.51.100.1", "GET /api/notes/ HTTP/1.1", 200, "Mozilla/5.0", "b1"),
    ("198.51.100.1", "GET /static/app.js HTTP/1.1", 200, "curl/8.0", "b2"),
    ("198.51.100.1", "GET /api/environment/ HTTP/1.1", 200, "python-requests/2.31", "b3"),
    ("198.51.100.1", "GET /search/?q=wp-login.php HTTP/1.1", 200, "Mozilla/5.0", "b4"),
    ("198.51.100.1", "GET /.well-known/acme-challenge/abc HTTP/1.1", 200, "-", "b5"),
    ("198.51.100.2", "POST /admin/login/?next=/admin/ HTTP/1.1", 200, "Mozilla/5.0", "c1"),
    ("198.51.100.2", "POST /admin/login/ HTTP/1.1", 403, "Mozilla/5.0", "c2"),
    ("198.51.100.3", "POST /admin/login/?next=/admin/ HTTP/1.1", 302, "Mozilla/5.0", "c3"),
    ("198.51.100.3", "GET /admin/login/ HTTP/1.1", 200, "Mozilla/5.0", "c4"),
    ("198.51.100.6", "POST /site-admin/login/ HTTP/1.1", 200, "Mozilla/5.0", "c5"),
    ("198.51.100.4", "POST /_cdc/hooks/demo HTTP/1.1", 403, "GitHub-Hookshot/1", "d1"),
    ("198.51.100.5", "POST /_cdc/hooks/demo HTTP/1.1", 200, "GitHub-Hookshot/1", "d2"),
])

# Every check prints one "<name> <result>" line; the test compares them all at once.
IN_IMAGE = r"""
set -o nounset
cd /t
matched() {  # FILTER: the matched lines' request ids, space-separated
    fail2ban-regex --print-all-matched --print-no-missed samples.log "$1" 2>&1 | grep -o 'request_id=[a-z0-9]*' \
        | cut -d= -f2 | paste -sd ' '
}
echo "scanners $(matched deploystack-scanners)"
echo "admin $(matched deploystack-django-admin)"
echo "admin-elsewhere $(matched 'deploystack-django-admin[admin_login="/site\-admin/login/"]')"
echo "cdc $(matched deploystack-cdc)"
printf '[DEFAULT]\ndeploystack_gateways = 192.0.2.1\n' > /etc/fail2ban/jail.d/deploystack-gateways.local
ln -sf /t/self-signed/config/lbc/jail.local /etc/fail2ban/jail.local
mkdir -p /var/log/deploystack && touch /var/log/deploystack/fail2ban.log
out=$(fail2ban-client --test 2>&1) && echo "jail.local ok" || echo "jail.local $out"
# what fail2ban would run: its jails, and what the first one never bans
dump=$(fail2ban-client -d 2>/dev/null)
echo "jails $(grep -o "^\['add', '[a-z-]*'" <<<"$dump" | cut -d"'" -f4 | paste -sd ' ')"
grep "'deploystack-scanners', 'addignoreip'" <<<"$dump"
# the entrypoint's geo lines for nginx's limits: every gateway as `<address> 1;`
lbc-supervise nginx-gateways >/run/deploystack-gateways.conf
echo "gateways $(sed -E 's/^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+ 1;$/ADDRESS 1;/' /run/deploystack-gateways.conf | sort -u)"
for mode in self-signed files acme swarm websocket proxied; do
    mkdir -p /etc/deploystack-certs /etc/deploystack-tls
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
        -keyout /etc/deploystack-certs/tls.key -out /etc/deploystack-certs/tls.crt 2>/dev/null
    cp /etc/deploystack-certs/tls.crt /etc/deploystack-tls/site.crt
    cp /etc/deploystack-certs/tls.key /etc/deploystack-tls/site.key
    out=$(nginx -t -q -c "/t/$mode/config/lbc/nginx.conf" 2>&1) && echo "nginx-$mode ok" || echo "nginx-$mode $out"
done
"""


@pytest.mark.docker
def test_filters_and_rendered_files_in_the_lbc_image(blueprint: Path, tmp_path: Path) -> None:
    """fail2ban-regex on sample log lines, fail2ban's own check of jail.local, `nginx -t` per TLS mode."""
    docker = pytest.importorskip("docker")
    from deploystack.engine import images
    from deploystack.engine.report import Silent
    from deploystack.render.writer import compare, write

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        pytest.skip("no Docker engine")
    # The image `deploystack up` builds (its tag is the content hash of compose/lbc plus the host CA
    # bundle): built here when missing, so this check never silently skips on a machine with an engine.
    probe = Session(Target(blueprint, tmp_path / "probe")).rendered
    image = probe.images["lbc"]
    only_lbc = dataclasses.replace(probe, plan=dataclasses.replace(probe.plan, services=(probe.plan.service("lbc"),)))
    write(probe.files, probe.output, compare(probe.files, probe.output))
    images.ensure_base_image(client, Silent())
    images.build_images(client, only_lbc, Silent())

    work = tmp_path / "t"
    work.mkdir()
    (work / "samples.log").write_text(SAMPLES)
    modes = {"self-signed": {}, "files": {"tls": "files", "cert_file": "tls/site.crt", "key_file": "tls/site.key"},
             "acme": {"tls": "acme", "acme_email": "ops@example.org"},
             "proxied": {"trusted_proxies": ["10.0.0.0/8", "2001:db8::/32"], "limits": {"enabled": False}}}
    hosts: dict[str, str] = {}
    for mode, settings in modes.items():
        spec = blueprint.parent.parent / mode / "deploystack.yaml"
        shutil.copytree(blueprint.parent, spec.parent)
        edit(spec, settings)
        rendered = rendered_of(spec, tmp_path)
        files = {k: v for k, v in rendered.files.items() if k.startswith("config/")}
        write(files, work / mode, compare(files, work / mode))
        # nginx -t resolves the upstreams' replica names: any address will do for a check.
        hosts |= {str(server).split(":")[0]: "127.0.0.1" for u in plan.upstreams(load_stack(spec))
                  for server in u["servers"]}  # type: ignore[attr-defined]
    # An ASGI app with websocket routes beside the demo's apps.
    websocket_spec = blueprint.parent.parent / "websocket" / "deploystack.yaml"
    shutil.copytree(blueprint.parent, websocket_spec.parent)
    add_chat_app(websocket_spec)
    files = {k: v for k, v in rendered_of(websocket_spec, tmp_path).files.items() if k.startswith("config/")}
    assert "proxy_set_header Connection $connection_upgrade;" in files["config/lbc/nginx.conf"].data.decode()
    write(files, work / "websocket", compare(files, work / "websocket"))
    hosts |= {str(server).split(":")[0]: "127.0.0.1" for u in plan.upstreams(load_stack(websocket_spec))
              for server in u["servers"]}  # type: ignore[attr-defined]
    # On a swarm the routes name tasks.<app> in variables, resolved per request: nothing to resolve for -t.
    swarm_spec = blueprint.parent.parent / "swarm" / "deploystack.yaml"
    shutil.copytree(blueprint.parent, swarm_spec.parent)
    exported = export_swarm(Session(Target.of(swarm_spec, None)))
    swarm_files = {k: v for k, v in exported.files.items() if k.startswith("config/")}
    write(swarm_files, work / "swarm", compare(swarm_files, work / "swarm"))
    output = client.containers.run(image, entrypoint=["bash", "-c", IN_IMAGE], volumes={str(work): {"bind": "/t"}},
                                   extra_hosts=hosts, remove=True, stderr=True).decode()
    assert output.splitlines() == [
        "scanners a1 a2 a3 a4 a5 a6 a7 a8 a9",
        "admin c1 c2",
        "admin-elsewhere c5",
        "cdc d1",
        "jail.local ok",
        "jails deploystack-scanners deploystack-django-admin deploystack-cdc",
        "['set', 'deploystack-scanners', 'addignoreip', '127.0.0.1/8', '::1', '192.0.2.1']",
        "gateways ADDRESS 1;",
        "nginx-self-signed ok",
        "nginx-files ok",
        "nginx-acme ok",
        "nginx-swarm ok",
        "nginx-websocket ok",
        "nginx-proxied ok",
    ]
