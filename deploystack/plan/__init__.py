"""Pure planning: Stack -> ProjectPlan. No I/O here; one module per role.

`build_plan` and `ProjectPlan` load on first use, so that a module importing `plan.names` (the spec's
models do) does not pull in every role module, nor import the spec models back while they load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploystack.plan.model import ProjectPlan
    from deploystack.plan.project import build_plan

__all__ = ["ProjectPlan", "build_plan"]


def __getattr__(name: str) -> Any:
    if name == "ProjectPlan":
        from deploystack.plan.model import ProjectPlan
        return ProjectPlan
    if name == "build_plan":
        from deploystack.plan.project import build_plan
        return build_plan
    raise AttributeError(name)
