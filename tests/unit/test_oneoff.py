"""One-off commands without an engine: what `manage`/`run`/`exec` parse, the one-off container's definition,
`-e`, and `logs --since/--tail`; what is wrong is exit 2 before any Docker call."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploystack.cli import app
from deploystack.cli.run import parse_env
from deploystack.engine.oneoff import oneoff_spec
from deploystack.errors import UsageError
from deploystack.logopts import parse_since, parse_tail
from deploystack.operations import Session, Target
from deploystack.operations import oneoff as oneoff_ops
from deploystack.operations.stack import generate
from tests.conftest import BLUEPRINTS


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    shutil.copytree(BLUEPRINTS / "default", tmp_path / "bp", ignore=shutil.ignore_patterns("staticfiles", "*.sqlite3"))
    return tmp_path / "bp" / "deploystack.yaml"


def test_env_options_like_docker_run() -> None:
    assert parse_env(["A=1", "B=x=y", "C="], {}) == {"A": "1", "B": "x=y", "C": ""}
    assert parse_env(["TOKEN"], {"TOKEN": "from the shell"}) == {"TOKEN": "from the shell"}
    with pytest.raises(UsageError, match="TOKEN is not set in this shell"):
        parse_env(["TOKEN"], {})
    with pytest.raises(UsageError, match="give NAME=VALUE"):
        parse_env(["1A=b"], {})
    with pytest.raises(UsageError, match="give NAME=VALUE"):
        parse_env(["=b"], {})


def test_since_takes_what_docker_takes() -> None:
    now = 1_800_000_000.0
    assert parse_since("10m", now) == now - 600
    assert parse_since("1h30m", now) == now - 5400
    assert parse_since("1.5s", now) == now - 1.5
    assert parse_since("1700000000", now) == 1_700_000_000.0
    utc = datetime(2026, 12, 1, 19, 0, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01T19:00:00Z", now) == utc
    assert parse_since("2026-12-01T20:00:00+01:00", now) == utc
    assert parse_since("2026-12-01", now) == datetime(2026, 12, 1).timestamp()  # local time, as the docker CLI
    for bad in ("yesterday", "-5m", "10 minutes", ""):
        with pytest.raises(UsageError, match="--since"):
            parse_since(bad, now)


def test_tail_is_a_count_or_all() -> None:
    assert parse_tail("0") == 0
    assert parse_tail("250") == 250
    assert parse_tail("ALL") == "all"
    with pytest.raises(UsageError, match="--tail '-1'"):
        parse_tail("-1")


def test_a_oneoff_is_a_replica_definition_labelled_as_compose_labels_one_offs(spec: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"")
    target = Target(spec, tmp_path / "out")
    generate(Session(target, ca_bundle=ca))
    rendered = Session(target, ca_bundle=ca).rendered
    service = rendered.plan.service("backend")
    slug = "ab" * 32
    oneoff = oneoff_spec(rendered, service, "demo/backend:pinned", {"EXTRA": "1", "DJANGO_DEBUG": "1"}, slug)
    assert oneoff.name == "demo-backend-run-abababababab"
    assert oneoff.image == "demo/backend:pinned"
    assert oneoff.labels["com.docker.compose.oneoff"] == "True"
    assert oneoff.labels["com.docker.compose.container-number"] == "-1"
    assert oneoff.labels["com.docker.compose.slug"] == slug
    assert oneoff.labels["com.docker.compose.project"] == "demo"
    assert oneoff.labels["com.docker.compose.service"] == "backend"
    # The replica's environment, secrets resolved from .env, with -e over it.
    assert oneoff.environment["DB_PASSWORD"] == rendered.secrets["DB_PASSWORD_BACKEND"]
    assert oneoff.environment["EXTRA"] == "1" and oneoff.environment["DJANGO_DEBUG"] == "1"
    assert not any("${" in value for value in oneoff.environment.values())


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    """What the commands hand to operations (the parsing under test stops there: no engine)."""
    seen: list[tuple[object, ...]] = []

    def run_oneoff(session: Session, name: str, command: list[str], env: dict[str, str]) -> int:
        seen.append(("run", session.spec, name, command, env))
        return 7

    def exec_in(session: Session, service: str, number: int, command: list[str]) -> int:
        seen.append(("exec", session.spec, service, number, command))
        return 3

    monkeypatch.setattr(oneoff_ops, "run_oneoff", run_oneoff)
    monkeypatch.setattr(oneoff_ops, "exec_in", exec_in)
    return seen


def test_manage_passes_django_options_through(calls: list[tuple[object, ...]]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["manage", "backend", "createsuperuser", "--noinput", "-e", "A=b",
                                 "-f", "my.yaml", "--verbosity", "2"])
    assert result.exit_code == 7, result.output
    assert calls[-1] == ("run", Path("my.yaml"), "backend",
                         ["python", "manage.py", "createsuperuser", "--noinput", "--verbosity", "2"], {"A": "b"})
    # After --, deploystack's own -o and -e belong to manage.py.
    runner.invoke(app, ["manage", "-f", "my.yaml", "backend", "--", "dumpdata", "-e", "auth", "-o", "out.json"])
    assert calls[-1][3] == ["python", "manage.py", "dumpdata", "-e", "auth", "-o", "out.json"]
    runner.invoke(app, ["manage", "backend", "loaddata", "--format", "json", "-"])
    assert calls[-1][3] == ["python", "manage.py", "loaddata", "--format", "json", "-"]


def test_run_and_exec_take_the_command_after_the_double_dash(calls: list[tuple[object, ...]]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", "backend", "-e", "X=1", "--", "sh", "-c", "exit 7", "-f", "x"])
    assert result.exit_code == 7
    assert calls[-1] == ("run", Path("deploystack.yaml"), "backend", ["sh", "-c", "exit 7", "-f", "x"], {"X": "1"})
    result = runner.invoke(app, ["exec", "db-primary", "--index", "2", "-f", "s.yaml", "--", "psql", "-c", "select 1"])
    assert result.exit_code == 3
    assert calls[-1] == ("exec", Path("s.yaml"), "db-primary", 2, ["psql", "-c", "select 1"])
    # Without --, an option of the command is taken for deploystack's, which has none such: exit 2.
    result = runner.invoke(app, ["run", "backend", "ls", "-la"])
    assert result.exit_code == 2 and "No such option" in result.output
    assert runner.invoke(app, ["exec", "redis", "--index", "0", "--", "true"]).exit_code == 2


def test_bad_input_is_exit_2_before_any_engine_call(spec: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["manage", "-f", str(spec), "nosuch", "migrate"])
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert re.fullmatch(r"no app 'nosuch' in .*deploystack.yaml; apps: backend, frontend, bff", str(result.exception))
    result = runner.invoke(app, ["run", "-f", str(spec), "backend", "-e", "2X=1", "--", "true"])
    assert isinstance(result.exception, UsageError) and "-e '2X=1'" in str(result.exception)
    # No stack generated in that output folder: its secrets would match nothing running.
    result = runner.invoke(app, ["run", "-f", str(spec), "-o", str(spec.parent / "elsewhere"), "backend", "--", "true"])
    assert isinstance(result.exception, UsageError) and "no stack was generated here" in str(result.exception)
    result = runner.invoke(app, ["logs", "--file", str(spec), "--since", "yesterday"])
    assert isinstance(result.exception, UsageError) and "--since 'yesterday'" in str(result.exception)
