"""LBC: nginx, the only service with published ports; one upstream per app listing every replica.

Beside nginx the LBC runs fail2ban, which reads a log file nginx writes for it and bans with iptables in
the LBC's own network namespace (cap NET_ADMIN). Every setting of nginx.conf and jail.local is computed
here; the templates under compose/lbc/templates only loop and substitute.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from deploystack.plan import hardening as h
from deploystack.plan.apc import APP_PORT, MEDIA_URL
from deploystack.plan.cdc import HOOKS_NETWORK, RECEIVER
from deploystack.plan.mmc import s3_endpoint
from deploystack.plan.model import Build, ConfigFile, HealthCheck, Mount, Port, Service
from deploystack.plan.names import Role, container_name
from deploystack.spec.models import LBC, Stack

CONFIG_DIR = "config/lbc"
NGINX_CONF = "/etc/deploystack/nginx.conf"
JAIL_LOCAL = "jail.local"
# Made (self-signed, or installed by the ACME loop) into the lbc-certs volume, kept across recreations.
CERTS_DIR = "/etc/deploystack-certs"
# tls: files: the folder(s) of the user's certificate and key, bind-mounted read-only.
TLS_FILES_DIR = "/etc/deploystack-tls"
ACME_WEBROOT = "/var/www/acme"
# nginx writes this for fail2ban (client address first); the image keeps it below a size (lbc-supervise).
FAIL2BAN_LOG = "/var/log/deploystack/fail2ban.log"
# nginx always gzips text/html; these too. Images, fonts and archives are compressed already.
GZIP_TYPES = (
    "text/plain", "text/css", "text/javascript", "text/xml", "text/csv",
    "application/javascript", "application/json", "application/xml", "application/rss+xml",
    "application/atom+xml", "application/manifest+json", "application/ld+json", "image/svg+xml",
)
HSTS_MAX_AGE_S = 365 * 24 * 3600
# Jails (filters are static files in the image, compose/lbc/fail2ban/filter.d/).
JAIL_SCANNERS = "deploystack-scanners"
JAIL_ADMIN = "deploystack-django-admin"
JAIL_CDC = "deploystack-cdc"
FAIL2BAN_VOLUME = "lbc-fail2ban"
# Never banned, whatever the spec says: loopback. The entrypoint adds the gateway address of every
# network the LBC is on (traffic from the host through the published ports comes from there).
ALWAYS_IGNORED = ("127.0.0.1/8", "::1")
# ... and never rate-limited: the entrypoint writes those gateways here as lines of a geo block (before
# nginx starts; a check of nginx.conf elsewhere needs the file, which may be empty).
GATEWAYS_GEO = "/run/deploystack-gateways.conf"
NEVER_LIMITED = ("127.0.0.0/8", "::1")
# Media are served with these whatever the uploader said (an uploaded HTML or SVG file must not run as a
# page of the site): no type sniffing, and a sandbox that gives the document a unique origin and no scripts.
MEDIA_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", "sandbox"))
# Content-Disposition by the stored Content-Type (nginx map, first regex that matches wins): a browser
# shows images, audio, video and PDF inline; everything else is a download. SVG is an image that can
# carry script: a download too (the sandbox would already stop it; this is the second line).
MEDIA_DISPOSITION = (
    (r"~*^image/svg\+xml", "attachment"),
    (r"~*^(image|audio|video)/", '""'),
    (r"~*^application/pdf(;|$)", '""'),
)


def upstreams(stack: Stack) -> list[dict[str, object]]:
    """Each app's replicas by container name: Compose names them <project>-<app>-<n>."""
    return [
        {"name": name,
         "servers": [f"{container_name(stack.project, name, n)}:{APP_PORT}" for n in range(1, app.replicas + 1)]}
        for name, app in stack.apc.apps.items()
    ]


def routes(stack: Stack, swarm: bool = False) -> list[dict[str, object]]:
    """Path prefixes, longest first, so that nginx's choice is obvious when reading the file.

    On Swarm a route names no upstream block but `tasks.<app>`, the address of every healthy task from
    Docker's DNS, looked up again when the resolver's answer expires: scaling needs no new nginx.conf.
    A websocket route (`websocket: True`) passes the client's Upgrade and keeps a quiet connection open.
    """
    triples = [(route, name, websocket) for name, app in stack.apc.apps.items()
               for websocket, prefixes in ((False, app.routes), (True, app.websocket_routes))
               for route in prefixes]
    triples.sort(key=lambda triple: (-len(triple[0]), triple[0]))
    if swarm:
        return [{"prefix": route, "variable": "tasks_" + name.replace("-", "_"),
                 "address": f"tasks.{name}:{APP_PORT}", "websocket": websocket}
                for route, name, websocket in triples]
    return [{"prefix": route, "upstream": name, "websocket": websocket} for route, name, websocket in triples]


# What every proxied location sends upstream. `Connection ""` lets nginx keep idle connections to the
# replicas (the upstreams' keepalive pool); a websocket route replaces it with the client's upgrade, so
# such a connection is the websocket's alone (nginx never pools an upgraded one). nginx drops the
# inherited headers of a location that sets any: a websocket location repeats the whole list.
PROXY_HEADERS = (
    ("Connection", '""'),
    # $http_host keeps a non-default port, which Django's CSRF origin check compares.
    ("Host", "$http_host"),
    ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
    ("X-Forwarded-Proto", "$scheme"),
    ("X-Real-IP", "$remote_addr"),
    ("X-Request-ID", "$request_id"),
)
WEBSOCKET_HEADERS = (("Upgrade", "$http_upgrade"), ("Connection", "$connection_upgrade"), *PROXY_HEADERS[1:])


def tls_files_mounts(lbc: LBC, project_dir: str) -> tuple[tuple[Mount, ...], str, str]:
    """tls: files: read-only binds of the folder(s) holding the certificate and key, and their paths inside.

    Folders, not files: a renewed certificate replaced in place (a new inode) is seen by the running
    container, which a single-file bind would not do. The key stays where the user keeps it: nothing of
    it is copied into the output directory, and compose.yaml names only the folder.
    """
    assert lbc.cert_file is not None and lbc.key_file is not None  # the spec requires both with files
    cert, key = PurePosixPath(lbc.cert_file), PurePosixPath(lbc.key_file)
    folders = [cert.parent] if cert.parent == key.parent else [cert.parent, key.parent]
    targets = [TLS_FILES_DIR] if len(folders) == 1 else [f"{TLS_FILES_DIR}/cert", f"{TLS_FILES_DIR}/key"]
    mounts = tuple(Mount(_bind_source(project_dir, folder), target, bind=True, read_only=True)
                   for folder, target in zip(folders, targets, strict=True))
    return mounts, f"{targets[0]}/{cert.name}", f"{targets[-1]}/{key.name}"


def _bind_source(project_dir: str, folder: PurePosixPath) -> str:
    """`folder` (relative to the spec, or absolute) as a bind source relative to the output directory."""
    if folder.is_absolute():
        return str(folder)
    path = str(PurePosixPath(project_dir) / folder)
    return path if path.startswith((".", "/")) else f"./{path}"


def tls_context(lbc: LBC, project_dir: str) -> tuple[dict[str, object], tuple[Mount, ...], tuple[tuple[str, str], ...]]:
    """nginx's certificate paths, the mounts they need and the entrypoint's TLS environment."""
    mounts: tuple[Mount, ...] = ()
    certificate, key = f"{CERTS_DIR}/tls.crt", f"{CERTS_DIR}/tls.key"
    environment: tuple[tuple[str, str], ...] = ()
    # Self-signed is the entrypoint's default: its environment stays as it was (DOMAIN only).
    if lbc.tls == "files":
        mounts, certificate, key = tls_files_mounts(lbc, project_dir)
        environment = (("TLS_MODE", "files"), ("TLS_CERT", certificate), ("TLS_KEY", key))
    elif lbc.tls == "acme":
        assert lbc.acme_email is not None  # the spec requires it with acme
        environment = (("TLS_MODE", "acme"), ("ACME_EMAIL", lbc.acme_email),
                       ("ACME_STAGING", "1" if lbc.acme_staging else "0"))
    context: dict[str, object] = {
        "certificate": certificate,
        "key": key,
        # HSTS pins browsers to HTTPS for a year: only with a certificate they accept.
        "hsts_max_age": HSTS_MAX_AGE_S if lbc.tls != "self-signed" else None,
        "acme_webroot": ACME_WEBROOT if lbc.tls == "acme" else None,
    }
    return context, mounts, environment


def jails(stack: Stack) -> list[dict[str, str]]:
    """One jail per kind of abuse; the CDC jail only when there is a CDC behind /_cdc/."""
    admin_login = re.escape(stack.lbc.fail2ban.admin_login)
    out = [
        {"name": JAIL_SCANNERS, "filter": JAIL_SCANNERS,
         "about": "requests for PHP apps, dotfiles, CGI and router exploits; scanners' user agents"},
        {"name": JAIL_ADMIN, "filter": f'{JAIL_ADMIN}[admin_login="{admin_login}"]',
         "about": f"failed Django admin logins: POST {stack.lbc.fail2ban.admin_login} answered 200 (a success is 302)"},
    ]
    if stack.cdc.enabled:
        out.append({"name": JAIL_CDC, "filter": JAIL_CDC,
                    "about": "webhook calls to /_cdc/ refused with 403 (bad signature)"})
    return out


def jail_context(stack: Stack) -> dict[str, object]:
    f2b = stack.lbc.fail2ban
    return {
        "domain": stack.domain,
        "maxretry": f2b.maxretry,
        "findtime": f2b.findtime,
        "bantime": f2b.bantime,
        "ignoreip": " ".join((*ALWAYS_IGNORED, *f2b.ignoreip)),
        "logpath": FAIL2BAN_LOG,
        "jails": jails(stack),
    }


def media_context(stack: Stack) -> dict[str, object] | None:
    """/media/ serves the first bucket of the object store (public read; uploads go through the apps)."""
    if not stack.mmc.enabled:
        return None
    return {"prefix": MEDIA_URL, "upstream": s3_endpoint(stack).removeprefix("http://"),
            "bucket": stack.mmc.buckets[0], "headers": MEDIA_HEADERS, "disposition": MEDIA_DISPOSITION}


def server_headers(tls: dict[str, object]) -> list[tuple[str, str]]:
    """add_header lines of the HTTPS server; a location with headers of its own repeats them."""
    headers = [("X-Request-ID", "$request_id")]  # a client can quote the id of a failed request
    if tls["hsts_max_age"]:  # the certificate is not self-signed: browsers may pin this host to HTTPS
        headers.append(("Strict-Transport-Security", f'"max-age={tls["hsts_max_age"]}"'))
    return headers


def limits_context(stack: Stack, routed: list[dict[str, object]]) -> dict[str, object] | None:
    """Per-client limits (nginx limit_req/limit_conn); the admin login gets its own, stricter one.

    The login location proxies like the route that serves the login path (the longest prefix of it).
    """
    limits = stack.lbc.limits
    if not limits.enabled:
        return None
    login = stack.lbc.fail2ban.admin_login
    route = next((r for r in routed if login.startswith(str(r["prefix"]))), None)
    return {
        "rate": f"{limits.rate}r/s", "burst": limits.burst, "connections": limits.connections,
        "unlimited": NEVER_LIMITED, "gateways": GATEWAYS_GEO,
        "login": None if route is None else {
            "path": login, "route": route,
            "rate": f"{limits.admin_login_rate}r/m", "burst": limits.admin_login_burst,
        },
    }


# How long the LBC trusts a DNS answer. On Swarm it is the most a scaled or updated app waits to get
# traffic, and a rolling update waits longer than this between tasks (swarm.update_delay).
RESOLVER_VALID = "10s"
SWARM_RESOLVER_VALID_S = 2


def nginx_context(stack: Stack, cdc_upstream: str | None, tls: dict[str, object],
                  swarm: bool = False) -> dict[str, object]:
    lbc = stack.lbc
    routed = routes(stack, swarm)
    return {
        "domain": stack.domain,
        "https_redirect_port": lbc.ports.https,
        "upstreams": [] if swarm else upstreams(stack),
        "routes": routed,
        "resolver_valid": f"{SWARM_RESOLVER_VALID_S}s" if swarm else RESOLVER_VALID,
        "cdc": {"upstream": cdc_upstream} if cdc_upstream else None,
        "media": media_context(stack),
        "client_max_body_size": lbc.client_max_body_size,
        "connect_timeout": f"{lbc.connect_timeout_ms}ms",
        "proxy_read_timeout": f"{lbc.proxy_read_timeout}s",
        # Sending a request body to a replica gets the same patience as reading its answer.
        "proxy_send_timeout": f"{lbc.proxy_read_timeout}s",
        "proxy_headers": [{"name": n, "value": v} for n, v in PROXY_HEADERS],
        "websocket_headers": [{"name": n, "value": v} for n, v in WEBSOCKET_HEADERS],
        "websocket_timeout": f"{lbc.websocket_timeout}s",
        "gzip_types": " ".join(GZIP_TYPES),
        "fail2ban_log": FAIL2BAN_LOG if lbc.fail2ban.enabled else None,
        "tls": tls,
        "server_headers": server_headers(tls),
        "limits": limits_context(stack, routed),
        # A CDN or load balancer in front: the client is the last address it adds to X-Forwarded-For.
        "trusted_proxies": lbc.trusted_proxies,
    }


def fail2ban_configs(stack: Stack) -> list[ConfigFile]:
    """jail.local beside nginx.conf when fail2ban is on; without it the LBC runs no fail2ban."""
    if not stack.lbc.fail2ban.enabled:
        return []
    return [ConfigFile(f"{CONFIG_DIR}/{JAIL_LOCAL}", "lbc/templates/jail.local.j2", jail_context(stack))]


def plan_lbc(stack: Stack, cdc_upstream: str | None, project_dir: str = "..",
             swarm: bool = False) -> tuple[Service, list[str], ConfigFile]:
    """The LBC service, its volumes and its nginx.conf (jail.local: `fail2ban_configs`).

    `project_dir`: the spec's folder relative to the output directory, for the binds of tls: files.
    `swarm`: apps are found through Docker's DNS (`tasks.<app>`) rather than listed by container name.
    """
    lbc = stack.lbc
    tls, tls_mounts, tls_environment = tls_context(lbc, project_dir)
    service = Service(
        name="lbc", role=Role.LBC,
        build=Build(role="lbc", repo="deploystack/lbc", context="build/lbc"),
        environment=(("DOMAIN", stack.domain), *tls_environment),
        # hooks: where the CDC's receiver is, which no app can reach.
        networks=("public", "private", *((HOOKS_NETWORK,) if cdc_upstream else ())),
        ports=(Port(lbc.bind, lbc.ports.http, 80), Port(lbc.bind, lbc.ports.https, 443)),
        # fail2ban's database: its bans come back when the LBC is recreated (a new image, a new config).
        mounts=(Mount("lbc-certs", CERTS_DIR), Mount(FAIL2BAN_VOLUME, "/var/lib/fail2ban"), *tls_mounts),
        # lbc-health: nginx answers on port 80, and fail2ban's server is alive when jail.local is there.
        healthcheck=HealthCheck(test=("lbc-health",), interval_s=3, start_period_s=30),
        depends_on=tuple(stack.apc.apps) + ((RECEIVER,) if cdc_upstream else ()),
        # nginx starts as root to listen on 80/443 (NET_BIND_SERVICE: engines before 20.10 do not open
        # low ports to every user), makes its temp folders for its workers' user (CHOWN) and drops its
        # workers to it (SETUID, SETGID); it tells them to stop over its own channel, so no KILL. Its
        # reopen after a rotation of fail2ban's log hands the file to that user too, and `nginx -t` (root,
        # before every reload) must still open it (DAC_OVERRIDE). fail2ban bans with iptables in the
        # LBC's own namespace (NET_ADMIN). Not read-only: fail2ban's set-up picks the iptables back end
        # (update-alternatives in /etc) and writes its jail.d.
        cap_add=(h.NET_ADMIN, h.NET_BIND_SERVICE, h.CHOWN, h.DAC_OVERRIDE, h.SETUID, h.SETGID),
        mem_limit=lbc.memory, pids_limit=h.PIDS,
        config_dir=CONFIG_DIR,
        # nginx -t, then reload; fail2ban reloads too when jail.local differs from what it loaded.
        reload=("lbc-reload",),
    )
    conf = ConfigFile(f"{CONFIG_DIR}/nginx.conf", "lbc/templates/nginx.conf.j2",
                      nginx_context(stack, cdc_upstream, tls, swarm))
    return service, ["lbc-certs", FAIL2BAN_VOLUME], conf
