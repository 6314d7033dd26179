"""generate: golden compose.yaml per blueprint, valid against the Compose spec, secrets kept and private,
byte-identical on regeneration, and a failed generate leaves the previous output untouched."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import check_jsonschema
import jsonschema
import pytest
from ruamel.yaml import YAML

from deploystack.errors import SpecError
from deploystack.operations import Session, Target
from deploystack.operations.stack import generate
from deploystack.render.envfile import read_env
from tests.conftest import BLUEPRINTS

GOLDEN = Path(__file__).parent / "golden"
BLUEPRINT_SPECS = sorted(BLUEPRINTS.glob("*/deploystack.yaml"))
COMPOSE_SCHEMA = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
EMPTY_CA = None  # tests pass an empty CA bundle so image tags do not depend on the host


@pytest.fixture
def blueprint(tmp_path: Path) -> Path:
    """A copy of the default blueprint, so generate writes into tmp_path."""
    shutil.copytree(BLUEPRINTS / "default", tmp_path / "default",
                    ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__"))
    return tmp_path / "default" / "deploystack.yaml"


def empty_ca(tmp_path: Path) -> Path:
    path = tmp_path / "empty-ca.crt"
    path.write_bytes(b"")
    return path


def normalized(compose: str) -> str:
    """Image tags are content hashes of the build contexts: stable, but not worth a golden update each."""
    return re.sub(r"(image: [\w./-]+):[0-9a-f]{12}", r"\1:<content-hash>", compose)


@pytest.mark.parametrize("spec", BLUEPRINT_SPECS, ids=lambda p: p.parent.name)
def test_golden_compose_file(spec: Path, tmp_path: Path) -> None:
    # A copy with its output in the usual place (stack/ by the spec): the CDC mounts the spec's folder by
    # its path relative to the output, which must not depend on where the checkout lives.
    copy = tmp_path / spec.parent.name
    shutil.copytree(spec.parent, copy, ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__",
                                                                       "stack", ".deploystack"))
    rendered = Session(Target(copy / spec.name, copy / "stack"), ca_bundle=empty_ca(tmp_path)).rendered
    text = normalized(rendered.files["compose.yaml"].data.decode())
    golden = GOLDEN / f"{spec.parent.name}.compose.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "run UPDATE_GOLDEN=1 pytest tests/unit/test_render.py after a deliberate change"


@pytest.mark.parametrize("spec", BLUEPRINT_SPECS, ids=lambda p: p.parent.name)
def test_compose_file_follows_the_compose_specification(spec: Path, tmp_path: Path) -> None:
    rendered = Session(Target(spec, tmp_path / "out"), ca_bundle=empty_ca(tmp_path)).rendered
    data = YAML(typ="safe").load(rendered.files["compose.yaml"].data)
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.validate(data, schema)


def test_generate_writes_a_private_env_and_no_secret_elsewhere(blueprint: Path, tmp_path: Path) -> None:
    out = tmp_path / "stack"
    generate(Session(Target(blueprint, out), ca_bundle=empty_ca(tmp_path)))
    env = read_env(out / ".env")
    assert {"DB_PASSWORD_BACKEND", "DJANGO_SECRET_KEY_BACKEND", "CDC_WEBHOOK_SECRET"} <= set(env)
    assert stat.S_IMODE((out / ".env").stat().st_mode) == 0o600
    for path in out.rglob("*"):
        if path.is_file() and path.name != ".env":
            text = path.read_bytes()
            for value in env.values():
                assert value.encode() not in text, f"a secret leaked into {path}"


def test_regenerating_is_byte_identical(blueprint: Path, tmp_path: Path) -> None:
    out = tmp_path / "stack"
    first = generate(Session(Target(blueprint, out), ca_bundle=empty_ca(tmp_path)))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = generate(Session(Target(blueprint, out), ca_bundle=empty_ca(tmp_path)))
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first.created and not second.any
    assert before == after


def test_failed_generate_leaves_previous_output_untouched(blueprint: Path, tmp_path: Path) -> None:
    out = tmp_path / "stack"
    generate(Session(Target(blueprint, out), ca_bundle=empty_ca(tmp_path)))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    blueprint.write_text(blueprint.read_text().replace("replicas: 2", "replicas: 0", 1))
    with pytest.raises(SpecError):
        generate(Session(Target(blueprint, out), ca_bundle=empty_ca(tmp_path)))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_dry_run_lists_changes_and_writes_nothing(blueprint: Path, tmp_path: Path) -> None:
    out = tmp_path / "stack"
    generate(Session(Target(blueprint, out), ca_bundle=empty_ca(tmp_path)))
    blueprint.write_text(blueprint.read_text().replace("replicas: 2", "replicas: 3", 1))
    conf = (out / "config/lbc/nginx.conf").read_bytes()
    changes = generate(Session(Target(blueprint, out), ca_bundle=empty_ca(tmp_path)), dry_run=True)
    assert "config/lbc/nginx.conf" in changes.changed and "compose.yaml" in changes.changed
    assert (out / "config/lbc/nginx.conf").read_bytes() == conf


def test_changing_one_app_changes_only_its_image_tag(blueprint: Path, tmp_path: Path) -> None:
    before = Session(Target(blueprint, tmp_path / "o"), ca_bundle=empty_ca(tmp_path)).rendered.images
    views = blueprint.parent / "apps/bff/bff/views.py"
    views.write_text(views.read_text() + "\n# a change\n")
    after = Session(Target(blueprint, tmp_path / "o"), ca_bundle=empty_ca(tmp_path)).rendered.images
    assert {name for name in before if before[name] != after[name]} == {"bff", "bff-migrate"}


def test_nginx_conf_lists_each_replica(blueprint: Path, tmp_path: Path) -> None:
    rendered = Session(Target(blueprint, tmp_path / "o"), ca_bundle=empty_ca(tmp_path)).rendered
    conf = rendered.files["config/lbc/nginx.conf"].data.decode()
    for server in ("demo-backend-1:8000", "demo-backend-2:8000", "demo-frontend-2:8000", "demo-bff-1:8000"):
        assert f"server {server}" in conf
