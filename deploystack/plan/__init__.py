"""Pure planning: Stack -> ProjectPlan. No I/O here; one module per role."""

from deploystack.plan.model import ProjectPlan
from deploystack.plan.project import build_plan

__all__ = ["ProjectPlan", "build_plan"]
