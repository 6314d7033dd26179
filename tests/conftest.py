"""Shared helpers: a spec folder laid out in tmp_path, with throwaway Django sources."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLUEPRINTS = REPO / "blueprints"


def write_spec(folder: Path, text: str, apps: tuple[str, ...] = ("backend",)) -> Path:
    """A spec file plus a minimal Django project (just manage.py) for each app source."""
    for app in apps:
        (folder / "apps" / app).mkdir(parents=True, exist_ok=True)
        (folder / "apps" / app / "manage.py").write_text("# stand-in\n")
    spec = folder / "deploystack.yaml"
    spec.write_text(text)
    return spec


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    return tmp_path
