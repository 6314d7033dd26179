"""LBC: nginx, the only service with published ports; one upstream per app listing every replica."""

from __future__ import annotations

from deploystack.plan.apc import APP_PORT
from deploystack.plan.model import Build, ConfigFile, HealthCheck, Mount, Port, Service
from deploystack.spec.models import Stack

NGINX_CONF = "/etc/deploystack/nginx.conf"


def upstreams(stack: Stack) -> list[dict[str, object]]:
    """Each app's replicas by container name: Compose names them <project>-<app>-<n>."""
    return [
        {"name": name, "servers": [f"{stack.project}-{name}-{n}:{APP_PORT}" for n in range(1, app.replicas + 1)]}
        for name, app in stack.apc.apps.items()
    ]


def routes(stack: Stack) -> list[dict[str, str]]:
    """Path prefixes, longest first, so that nginx's choice is obvious when reading the file."""
    pairs = [(route, name) for name, app in stack.apc.apps.items() for route in app.routes]
    pairs.sort(key=lambda pair: (-len(pair[0]), pair[0]))
    return [{"prefix": route, "upstream": name} for route, name in pairs]


def plan_lbc(stack: Stack, cdc_upstream: str | None) -> tuple[Service, list[str], ConfigFile]:
    lbc = stack.lbc
    config = "config/lbc"
    service = Service(
        name="lbc", role="lbc",
        build=Build(role="lbc", repo="deploystack/lbc", context="build/lbc"),
        environment=(("DOMAIN", stack.domain),),
        networks=("public", "private"),
        ports=(Port(lbc.bind, lbc.ports.http, 80), Port(lbc.bind, lbc.ports.https, 443)),
        mounts=(Mount("lbc-certs", "/etc/deploystack-certs"),),
        healthcheck=HealthCheck(test=("lbc-health",), interval_s=3, start_period_s=30),
        depends_on=tuple(stack.apc.apps) + (("cdc",) if cdc_upstream else ()),
        cap_add=("NET_ADMIN",),  # fail2ban's firewall action runs in the LBC's own namespace
        config_dir=config,
        reload=("sh", "-c", f"nginx -t -q -c {NGINX_CONF} && nginx -s reload -c {NGINX_CONF}"),
    )
    conf = ConfigFile(f"{config}/nginx.conf", "lbc/templates/nginx.conf.j2", {
        "domain": stack.domain,
        "https_redirect_port": lbc.ports.https,
        "upstreams": upstreams(stack),
        "routes": routes(stack),
        "cdc": {"upstream": cdc_upstream} if cdc_upstream else None,
        "client_max_body_size": lbc.client_max_body_size,
        "proxy_read_timeout": f"{lbc.proxy_read_timeout}s",
    })
    return service, ["lbc-certs"], conf
