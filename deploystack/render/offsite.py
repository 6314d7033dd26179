"""`deploystack export replica`: the folder that runs the offsite replica on the other host.

Everything comes from the rendered stack, so the bundle and the primary agree on the image, the role,
its password and the CA; nothing is written here.
"""

from __future__ import annotations

from typing import Any

from deploystack.errors import UsageError
from deploystack.plan.bases import ROLE_RELEASE, slim_image
from deploystack.plan.dbc import OFFSITE_SECRET, PORT, offsite_role, pg_hba_conf, postgresql_conf
from deploystack.plan.names import PRIMARY
from deploystack.render.compose import dump_yaml
from deploystack.render.dbtls import CA_CERT
from deploystack.render.project import Rendered
from deploystack.render.sourcetree import FileData
from deploystack.render.templates import render_template
from deploystack.resources import compose_root
from deploystack.spec.models import Stack

CONFIG_DIR = "/etc/deploystack"  # where the bundle's config/ is mounted in the replica
DEFAULT_BASE = slim_image(ROLE_RELEASE)
DEFAULT_PUBLISH = "127.0.0.1:5432"
BUNDLE_MARK = "bundle.env"  # a folder with it is an earlier export, which may be written over


def replica_bundle(stack: Stack, rendered: Rendered) -> dict[str, FileData]:
    offsite = stack.dbc.offsite
    if offsite is None:
        raise UsageError("dbc.offsite is not declared in the spec")
    role = offsite_role(offsite)
    image = rendered.images[PRIMARY]
    context = rendered.plan.service(PRIMARY).build
    assert context is not None  # the database is always built here
    prefix = context.context + "/"
    files = {f"image/{name.removeprefix(prefix)}": data
             for name, data in rendered.files.items() if name.startswith(prefix)}
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
        "REPLICATION_USER": role, "REPLICATION_PASSWORD": rendered.secrets[OFFSITE_SECRET],
        "REPLICA_SLOT": role, "POSTGRES_USER": stack.dbc.user, "POSTGRES_DB": stack.dbc.database,
    }).encode(), 0o600)
    name = f"{stack.project}-offsite-{offsite.name}"
    files[BUNDLE_MARK] = _text(
        "# Written by deploystack export replica: run.sh's and promote.sh's defaults (the environment wins).\n"
        f"NAME=${{NAME:-{name}}}\nIMAGE=${{IMAGE:-{image}}}\nBASE_IMAGE=${{BASE_IMAGE:-{DEFAULT_BASE}}}\n"
        f"PUBLISH=${{PUBLISH-{DEFAULT_PUBLISH}}}\n")
    files["compose.yaml"] = _text(dump_yaml(
        _compose(name, image), "Written by deploystack export replica: docker compose up -d runs the replica."))
    for script in ("run.sh", "promote.sh"):
        files[script] = FileData((compose_root() / "offsite" / script).read_bytes(), 0o755)
    files["README.md"] = _text(render_template("offsite/README.md.j2", {
        "project": stack.project, "offsite": offsite, "name": name, "role": role, "image": image,
        "publish": DEFAULT_PUBLISH, "base": DEFAULT_BASE}))
    return files


def _compose(name: str, image: str) -> dict[str, Any]:
    """The replica for Compose, with run.sh's container and volume names, so promote.sh finds it either way."""
    host_ip, port = DEFAULT_PUBLISH.split(":")
    return {
        "name": name,
        "services": {"replica": {
            "container_name": name,
            "image": image,
            "build": {"context": "./image", "args": {"BASE_IMAGE": DEFAULT_BASE}},
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

