"""The operations session: a command parses the spec once (`up --engine swarm` and `db promote` used to parse
it three or four times), and the rendered project and the engine client are made once too. The engine is
stubbed: what is counted stops at its door."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploystack.cli import app
from deploystack.engine import client, failover, images, provision, swarm
from deploystack.operations import Session, Target
from deploystack.spec import loader
from tests.conftest import BLUEPRINTS


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    shutil.copytree(BLUEPRINTS / "default", tmp_path / "default",
                    ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__", "stack", ".deploystack"))
    (tmp_path / "empty-ca.crt").write_bytes(b"")
    return tmp_path / "default" / "deploystack.yaml"


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every parse of a spec (load_stack's and scale's), by path."""
    seen: list[Path] = []
    validate = loader.validate_text

    def counted(text: str, path: Path) -> Any:
        seen.append(path)
        return validate(text, path)

    monkeypatch.setattr(loader, "validate_text", counted)
    return seen


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No engine: each call that would reach it is named here instead."""
    calls: list[str] = []

    class Provisioner:
        def __init__(self, *args: object) -> None:
            calls.append("provision")

        def join(self, timeout: float) -> None:
            pass

        def check(self) -> None:
            pass

    def stub(name: str, result: object = None) -> Any:
        def call(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return result
        return call

    monkeypatch.setattr(client, "engine_address", stub("engine_address", "unix:///var/run/docker.sock"))
    monkeypatch.setattr(client, "connect", stub("connect", object()))
    monkeypatch.setattr(images, "ensure_base_images", stub("ensure_base_images"))
    monkeypatch.setattr(images, "build_images", stub("build_images", []))
    monkeypatch.setattr(swarm, "deploy", stub("stack deploy"))
    monkeypatch.setattr(provision, "SwarmProvisioner", Provisioner)
    monkeypatch.setattr(failover, "promote", stub("promote", "demo_db-primary-old"))
    monkeypatch.setattr(Session, "converge", lambda self, rendered, partial=False: calls.append("converge"))
    return calls


def test_up_on_a_swarm_parses_the_spec_once(spec: Path, parsed: list[Path], engine: list[str]) -> None:
    result = CliRunner().invoke(app, ["up", "--engine", "swarm", "-f", str(spec),
                                      "--ca-bundle", str(spec.parent.parent / "empty-ca.crt")])
    assert result.exit_code == 0, result.output
    assert engine.count("connect") == 1 and "stack deploy" in engine
    assert parsed == [spec]  # the stack file, the build, the LBC's address printed at the end: one parse
    assert (spec.parent / "stack" / "swarm" / "stack.yaml").is_file()


def test_db_promote_parses_the_spec_once(spec: Path, parsed: list[Path], engine: list[str]) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["generate", "-f", str(spec)]).exit_code == 0
    parsed.clear()
    result = runner.invoke(app, ["db", "promote", "db-replica-1", "-f", str(spec)])
    assert result.exit_code == 0, result.output
    assert "volume demo_db-primary-old" in result.output
    assert parsed == [spec] and engine == ["connect", "promote", "converge"]


def test_a_session_renders_once_and_a_fresh_render_takes_the_same_stack(spec: Path, parsed: list[Path]) -> None:
    session = Session(Target.of(spec, None), ca_bundle=spec.parent.parent / "empty-ca.crt")
    assert session.rendered is session.rendered
    again = session.render()
    assert again is not session.rendered and again.images == session.rendered.images  # nothing written: new secrets
    assert parsed == [spec]
