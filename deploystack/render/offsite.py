"""`deploystack export replica`: the folder that runs the offsite replica on the other host.

Everything comes from the rendered stack, so the bundle and the primary agree on the image, the role,
its password and the CA; nothing is written here. On a Patroni stack (PostgreSQL 17, no `db-primary`) the
replica is the same image built for 17 on Debian 13 (a standby runs its primary's major), and it streams from
`db-offsite`, the proxy to whichever node leads.
"""

from __future__ import annotations

from typing import Any

from deploystack.errors import UsageError
from deploystack.plan import patroni
from deploystack.plan.bases import ROLE_RELEASE, slim_image
from deploystack.plan.dbc import OFFSITE_SECRET, PORT, offsite_role, pg_hba_conf, postgresql_conf
from deploystack.plan.model import Build
from deploystack.plan.names import PRIMARY
from deploystack.render.compose import dump_yaml
from deploystack.render.contexts import content_hash, context_files
from deploystack.render.project import Rendered
from deploystack.render.sourcetree import FileData
from deploystack.render.state import OFFSITE_CA_CERT as CA_CERT
from deploystack.render.templates import render_template
from deploystack.resources import compose_root
from deploystack.spec.models import Stack

CONFIG_DIR = "/etc/deploystack"  # where the bundle's config/ is mounted in the replica
DEFAULT_BASE = slim_image(ROLE_RELEASE)
STREAMING_MAJOR = 15  # compose/db/Dockerfile's default PG_MAJOR
DB_BUILD = Build(role="db", repo="deploystack/db", context="build/db")
DEFAULT_PUBLISH = "127.0.0.1:5432"
CONNECT_TIMEOUT_S = 10  # the replica's attempts to reach the primary (or Patroni's leader through db-offsite)
BUNDLE_MARK = "bundle.env"  # a folder with it is an earlier export, which may be written over


def replica_bundle(stack: Stack, rendered: Rendered) -> dict[str, FileData]:
    offsite = stack.dbc.offsite
    if offsite is None:
        raise UsageError("dbc.offsite is not declared in the spec")
    role = offsite_role(offsite)
    image, major, base, files = _image(stack, rendered)
    files["config/ca.crt"] = rendered.files[CA_CERT]
    # The standby's own settings: no server certificate there, and clients from anywhere it is published.
    files["config/postgresql.conf"] = _text(render_template("db/templates/postgresql.conf.j2",
                                                            postgresql_conf(stack.dbc, tls=False)))
    hba = pg_hba_conf(stack, None) | {"replication_user": role}
    files["config/pg_hba.conf"] = _text(render_template("db/templates/pg_hba.conf.j2", hba))
    files["replica.env"] = FileData(_env_text({
        "PRIMARY_HOST": offsite.host, "PRIMARY_PORT": str(offsite.port),
        # verify-full: the certificate must come from the stack's CA and name `host`.
        "PRIMARY_SSLMODE": "verify-full", "PRIMARY_SSLROOTCERT": f"{CONFIG_DIR}/ca.crt",
        "PRIMARY_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S),
        "REPLICATION_USER": role, "REPLICATION_PASSWORD": rendered.secrets[OFFSITE_SECRET],
        "REPLICA_SLOT": role, "POSTGRES_USER": stack.dbc.user, "POSTGRES_DB": stack.dbc.database,
    }).encode(), 0o600)
    name = f"{stack.project}-offsite-{offsite.name}"
    files[BUNDLE_MARK] = _text(
        "# Written by deploystack export replica: run.sh's and promote.sh's defaults (the environment wins).\n"
        f"NAME=${{NAME:-{name}}}\nIMAGE=${{IMAGE:-{image}}}\nBASE_IMAGE=${{BASE_IMAGE:-{base}}}\n"
        f"PUBLISH=${{PUBLISH-{DEFAULT_PUBLISH}}}\n" + (f"PG_MAJOR={major}\n" if major != STREAMING_MAJOR else ""))
    files["compose.yaml"] = _text(dump_yaml(
        _compose(name, image, base, major),
        "Written by deploystack export replica: docker compose up -d runs the replica."))
    for script in ("run.sh", "promote.sh"):
        files[script] = FileData((compose_root() / "offsite" / script).read_bytes(), 0o755)
    files["README.md"] = _text(render_template("offsite/README.md.j2", {
        "project": stack.project, "offsite": offsite, "name": name, "role": role, "image": image,
        "publish": DEFAULT_PUBLISH, "base": base, "major": major, "patroni": patroni.enabled(stack),
        "release": base.removeprefix("debian:").removesuffix("-slim")}))
    return files


def _image(stack: Stack, rendered: Rendered) -> tuple[str, int, str, dict[str, FileData]]:
    """(image, PostgreSQL major, default base, the build context's files under image/) of the replica: the
    primary's own db image on a streaming stack; on Patroni, the same context built for the nodes' major."""
    if not patroni.enabled(stack):
        context = rendered.plan.service(PRIMARY).build
        assert context is not None  # the database is always built here
        prefix = context.context + "/"
        return rendered.images[PRIMARY], STREAMING_MAJOR, DEFAULT_BASE, {
            f"image/{name.removeprefix(prefix)}": data
            for name, data in rendered.files.items() if name.startswith(prefix)}
    node = rendered.plan.service(patroni.node_names(stack)[0]).build
    assert node is not None
    files = context_files(DB_BUILD, None, rendered.files[f"{node.context}/ca-bundle.crt"].data)
    # Its own tag: the files are a streaming stack's db image's, the major (a build argument) is not.
    image = f"{DB_BUILD.repo}:pg{patroni.PG_MAJOR}-{content_hash(files)}"
    return image, patroni.PG_MAJOR, slim_image(patroni.RELEASE), {f"image/{k}": v for k, v in files.items()}


def _compose(name: str, image: str, base: str, major: int) -> dict[str, Any]:
    """The replica for Compose, with run.sh's container and volume names, so promote.sh finds it either way."""
    host_ip, port = DEFAULT_PUBLISH.split(":")
    return {
        "name": name,
        "services": {"replica": {
            "container_name": name,
            "image": image,
            "build": {"context": "./image", "args": {"BASE_IMAGE": base} | (
                {"PG_MAJOR": str(major)} if major != STREAMING_MAJOR else {})},
            "env_file": ["replica.env"],
            "environment": {"DB_ROLE": "replica"},
            "volumes": [{"type": "volume", "source": "data", "target": "/var/lib/postgresql/data"},
                        {"type": "bind", "source": "./config", "target": CONFIG_DIR, "read_only": True}],
            "ports": [{"target": PORT, "host_ip": host_ip, "published": port, "protocol": "tcp"}],
            "healthcheck": {"test": ["CMD", "db-health"], "interval": "5s", "timeout": "5s", "retries": 5,
                            "start_period": "600s"},
            "restart": "unless-stopped",
            "stop_grace_period": "60s",
        }},
        "volumes": {"data": {"name": f"{name}-data"}},
    }


def _env_text(values: dict[str, str]) -> str:
    lines = ["# The offsite replica's connection to the primary. Keep private (mode 0600): it holds its password."]
    return "\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n"


def _text(text: str) -> FileData:
    return FileData(text.encode())

