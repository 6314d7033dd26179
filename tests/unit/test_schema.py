"""`deploystack schema`: the JSON Schema accepts what the loader accepts (shorthands included), rejects
what it rejects by shape, names its dialect and itself, and describes every property. Checked with
check-jsonschema, as an editor or a CI job would use it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploystack.spec import load_stack
from tests.conftest import REPO, write_spec

CHECK = Path(sys.executable).parent / "check-jsonschema"
SPECS = sorted([REPO / "blueprints" / "default" / "deploystack.yaml", *REPO.glob("tests/fixtures/projects/*.yaml"),
                *REPO.glob("tests/fixtures/projects/*/deploystack.yaml")])

SHORTHANDS = """\
project: shop
lbc:
  fail2ban: false
apc:
  env_file: shared.env
  apps:
    backend:
      python: 3.11
      source: apps/backend
      wsgi: backend.wsgi:application
      env_file: backend.env
acc:
  redis: true
  memcached: false
  rabbitmq: false
  elasticsearch: false
mmc: false
cdc: true
"""


def deploystack(*args: str, cwd: Path = REPO) -> str:
    result = subprocess.run([sys.executable, "-m", "deploystack", *args], capture_output=True, text=True,
                            cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "deploystack.schema.json"
    path.write_text(deploystack("schema"))
    return path


def check(schema_file: Path, *instances: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHECK, "--schemafile", str(schema_file), *map(str, instances)],
                          capture_output=True, text=True, timeout=120)


def test_the_schema_names_its_dialect_and_itself_and_is_a_valid_schema(schema_file: Path) -> None:
    schema = json.loads(schema_file.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("urn:deploystack:spec:")
    result = subprocess.run([CHECK, "--check-metaschema", str(schema_file)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_inits_spec_every_blueprint_and_fixture_pass(schema_file: Path, tmp_path: Path) -> None:
    starter = tmp_path / "deploystack.yaml"
    deploystack("init", "-f", str(starter))
    assert len(SPECS) >= 4
    result = check(schema_file, starter, *SPECS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shorthand_the_loader_takes_passes(schema_file: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SHORTHANDS)
    (tmp_path / "shared.env").write_text("A=1\n")
    (tmp_path / "backend.env").write_text("B=1\n")
    stack = load_stack(spec)  # the loader takes them ...
    assert (stack.acc.redis.enabled, stack.mmc.enabled, stack.cdc.enabled, stack.lbc.fail2ban.enabled) == (
        True, False, True, False)
    assert stack.apc.apps["backend"].python == "3.11" and stack.apc.env_file == ["shared.env"]
    result = check(schema_file, spec)  # ... and so does the schema
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("line", "replacement"), [
    ("  redis: true", "  redis: 3"), ("      python: 3.11", "      python: 3.12"), ("mmc: false", "mmc: {size: 1}"),
    ("  env_file: shared.env", "  env_file: {a: 1}"),
])
def test_what_the_loader_refuses_by_shape_the_schema_refuses(
        schema_file: Path, tmp_path: Path, line: str, replacement: str) -> None:
    spec = write_spec(tmp_path, SHORTHANDS.replace(line, replacement))
    assert check(schema_file, spec).returncode == 1


def _properties(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            yield f"{path}.{name}", prop
        for key, value in node.items():
            yield from _properties(value, f"{path}.{key}" if key != "properties" else path)
    elif isinstance(node, list):
        for value in node:
            yield from _properties(value, path)


def test_every_property_has_a_description(schema_file: Path) -> None:
    undescribed = sorted({path for path, prop in _properties(json.loads(schema_file.read_text()))
                          if not prop.get("description")})
    assert undescribed == []
