"""The spec: models, loading with line numbers, JSON Schema."""

from deploystack.spec.loader import load_stack
from deploystack.spec.models import App, Stack

__all__ = ["App", "Stack", "load_stack"]
