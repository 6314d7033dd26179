"""The spec file and output folder a command works on: kept light, so the CLI can name them without
importing the renderers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_SPEC = Path("deploystack.yaml")


@dataclass(frozen=True)
class Target:
    """The spec file and the output directory a command works on."""

    spec: Path
    output: Path

    @classmethod
    def of(cls, spec: Path | None, output: Path | None) -> Target:
        spec = spec or DEFAULT_SPEC
        return cls(spec, output or spec.resolve().parent / "stack")
