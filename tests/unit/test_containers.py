"""Container definitions: secrets interpolated the way Compose does, and config hashes that move
exactly when a container must be recreated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploystack.engine.containers import container_spec, interpolate
from deploystack.errors import UsageError
from deploystack.operations import Session, Target
from deploystack.operations.stack import generate
from tests.conftest import BLUEPRINTS


def test_interpolate_like_compose() -> None:
    secrets = {"PW": "s3cret"}
    assert interpolate("redis://:${PW}@redis:6379/0", secrets) == "redis://:s3cret@redis:6379/0"
    assert interpolate("costs $$5", secrets) == "costs $5"
    with pytest.raises(UsageError, match="MISSING is not set"):
        interpolate("${MISSING}", secrets)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    shutil.copytree(BLUEPRINTS / "default", tmp_path / "bp", ignore=shutil.ignore_patterns("staticfiles", "*.sqlite3"))
    return tmp_path / "bp" / "deploystack.yaml"


def hashes(spec: Path, out: Path, ca: Path) -> dict[str, str]:
    # keeps .env, so the secrets (which count in the hashes) stay put
    generate(Session(Target(spec, out), ca_bundle=ca))
    rendered = Session(Target(spec, out), ca_bundle=ca).rendered
    return {s.name: container_spec(rendered, s, 1).config_hash for s in rendered.plan.services}


def test_only_the_changed_service_gets_a_new_hash(spec: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"")
    before = hashes(spec, tmp_path / "out", ca)
    spec.write_text(spec.read_text().replace("      replicas: 1\n      routes: [/bff/]",
                                             "      replicas: 1\n      routes: [/bff/]\n      env: {A: b}"))
    after = hashes(spec, tmp_path / "out", ca)
    assert {name for name in before if before[name] != after[name]} == {"bff", "bff-migrate"}


def test_upstream_changes_do_not_recreate_the_lbc(spec: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"")
    before = hashes(spec, tmp_path / "out", ca)
    spec.write_text(spec.read_text().replace("replicas: 2", "replicas: 3", 1))
    after = hashes(spec, tmp_path / "out", ca)
    assert before["lbc"] == after["lbc"], "the LBC reloads its upstreams; it is not recreated"
    assert before["backend"] == after["backend"], "existing replicas are untouched by a replica count"
