"""The one jinja2 environment: strict, sandboxed, for nginx/PostgreSQL/webhook config text only."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from deploystack.errors import DeployError
from deploystack.resources import compose_root


@cache
def environment(root: Path | None = None) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=FileSystemLoader(str(root or compose_root())),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # config files, not HTML
    )


def render_template(name: str, context: dict[str, object]) -> str:
    try:
        return environment().get_template(name).render(**context)
    except TemplateError as exc:
        raise DeployError(f"template compose/{name}: {exc}") from exc
