"""What each container of a rendered project looks like, as plain data, and its config hash.

Pure: the Docker calls that create these live in apply.py. Secrets are resolved here from .env the
way Compose interpolates `${NAME}` and `$$`, so the hash changes when a secret does.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from deploystack import labels
from deploystack.errors import UsageError
from deploystack.plan.model import Service
from deploystack.render.compose import dependencies, service_dict
from deploystack.render.project import COMPOSE_FILE, Rendered
from deploystack.spec.values import REFERENCE

CONFIG_MOUNT = "/etc/deploystack"


def interpolate(value: str, secrets: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in secrets:
            raise UsageError(f"{name} is not set in the stack's .env (run deploystack generate)")
        return secrets[name]

    return REFERENCE.sub(replace, value)


@dataclass(frozen=True)
class ContainerSpec:
    service: Service
    number: int
    name: str
    image: str
    environment: dict[str, str]
    config_hash: str
    labels: dict[str, str]


def config_files_hash(rendered: Rendered, service: Service) -> str:
    """Hash of the rendered files a service mounts at /etc/deploystack."""
    if service.config_dir is None:
        return ""
    digest = hashlib.sha256()
    prefix = service.config_dir + "/"
    for name in sorted(n for n in rendered.files if n.startswith(prefix)):
        digest.update(name.encode() + b"\0" + rendered.files[name].data)
    return digest.hexdigest()


def container_spec(rendered: Rendered, service: Service, number: int) -> ContainerSpec:
    plan = rendered.plan
    environment = {k: interpolate(v, rendered.secrets) for k, v in service.environment}
    definition: dict[str, Any] = service_dict(plan, service, rendered.images[service.name])
    definition.pop("deploy", None)  # the replica count is not part of one replica's config
    definition["environment"] = environment
    # A service that reloads its config in place (LBC) is not recreated when only the files change.
    if service.reload is None:
        definition["config_files"] = config_files_hash(rendered, service)
    config_hash = hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()
    name = plan.container_name(service, number)
    return ContainerSpec(
        service=service, number=number, name=name, image=rendered.images[service.name],
        environment=environment, config_hash=config_hash,
        labels={
            labels.PROJECT: plan.project,
            labels.SERVICE: service.name,
            labels.NUMBER: str(number),
            labels.ONEOFF: "False",
            labels.COMPOSE_HASH: config_hash,
            labels.CONFIG_HASH: config_hash,
            labels.WORKING_DIR: str(rendered.output),
            labels.CONFIG_FILES: str(rendered.output / COMPOSE_FILE),
            labels.ROLE: service.role.value,
            # Not part of the hash: a container made before this label existed is not recreated for it.
            labels.DEPENDS_ON: ",".join(f"{dep}:{condition}:false"
                                        for dep, condition in dependencies(plan, service).items()),
        },
    )


def wanted_specs(rendered: Rendered, service: Service) -> list[ContainerSpec]:
    return [container_spec(rendered, service, n) for n in range(1, service.replicas + 1)]
