"""`deploystack env APP`: the variables an app gets and where each comes from, as plain data.

Pure: the caller resolves the app's values from outside the spec and reads the output's .env.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from deploystack.errors import UsageError
from deploystack.plan.model import ProjectPlan
from deploystack.spec.appenv import HOST, AppEnv
from deploystack.spec.models import Stack, env_value, has_references
from deploystack.spec.values import REFERENCE

MASK = "********"


@dataclass(frozen=True)
class EnvRow:
    name: str
    source: str  # spec, host environment, env_file <path>, generated secret, deploystack
    value: str  # masked unless asked, when it holds a secret

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def env_rows(stack: Stack, plan: ProjectPlan, app: str, app_env: AppEnv, dotenv: dict[str, str],
             show: bool) -> list[EnvRow]:
    """The environment of app `app`'s web replicas in the order they get it. `dotenv`: the output's .env
    (empty before the first generate: generated secrets then show as not generated yet)."""
    if app not in stack.apc.apps:
        raise UsageError(f"no app {app!r} in this stack (apps: {', '.join(stack.apc.apps)})")
    spec_env = stack.apc.apps[app].env
    external = app_env.get(app, {})
    rows = []
    for name, value in plan.service(app).environment:
        if name in external:
            found = external[name]
            source = (f"host environment ({found.origin})" if found.source == HOST
                      else f"env_file {found.origin}")
            rows.append(EnvRow(name, source, found.value if show else MASK))
        elif name in spec_env and not has_references(spec_env[name]):
            rows.append(EnvRow(name, "spec", env_value(spec_env[name])))
        else:
            secrets = [m.group(1) for m in REFERENCE.finditer(value) if m.group(1)]
            source = f"generated secret ({', '.join(secrets)})" if secrets else "deploystack"
            rows.append(EnvRow(name, source, _fill(value, dotenv, show)))
    return rows


def _fill(value: str, dotenv: dict[str, str], show: bool) -> str:
    """A plan value with its `${SECRET}` references filled (or masked) and `$$` unescaped."""

    def one(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "$"
        if not show:
            return MASK
        return dotenv.get(match.group(1), "(not generated yet: deploystack generate)")

    return REFERENCE.sub(one, value)
