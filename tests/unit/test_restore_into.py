"""The disaster drill's and `db restore --into`'s pure parts: the off-host target's egress, why a repository
holds nothing to restore, the refusals of --into before anything runs, and init's backups block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploystack.backupinfo import restore_problem
from deploystack.errors import UsageError
from deploystack.plan import build_plan
from deploystack.plan.cdc import EGRESS_NETWORK
from deploystack.spec import load_stack
from tests.conftest import write_spec
from tests.unit.test_backups import DEFAULT, SPEC, stack_of

TARGET = ("    target: {endpoint: 's3.example.org:9443', bucket: dr-db, access_key_env: DR_KEY,\n"
          "             secret_key_env: DR_SECRET}\n")
BACKUP = {"label": "20261202-021500F", "type": "full", "timestamp": {"start": 1796177700, "stop": 1796177720},
          "info": {"size": 1, "repository": {"delta": 1}}, "archive": {}}


def test_only_an_off_host_target_gives_the_backup_service_a_way_out(tmp_path: Path) -> None:
    local = build_plan(stack_of(tmp_path))
    assert local.service("backup").networks == ("private",)
    assert EGRESS_NETWORK not in {n.name for n in local.networks}
    off_host = build_plan(stack_of(tmp_path, DEFAULT + TARGET))
    assert off_host.service("backup").networks == ("private", EGRESS_NETWORK)
    assert [n.internal for n in off_host.networks if n.name == EGRESS_NETWORK] == [False]
    # Nothing else joins it: the nodes and the apps stay on the internal network only.
    assert [s.name for s in off_host.services if EGRESS_NETWORK in s.networks] == ["backup"]


@pytest.mark.parametrize(("info", "label", "expected"), [
    ([], None, "holds no backup of this stack (no stanza"),
    ([{"status": {"code": 1, "message": "missing stanza path"}, "backup": []}], None, "no stanza"),
    ([{"status": {"code": 2, "message": "no valid backups"}, "backup": []}], None,
     "holds no backup yet (WAL alone cannot be restored)"),
    ([{"status": {"code": 99, "message": "other: unable to connect"}, "backup": []}], None,
     "pgBackRest reports: other: unable to connect"),
    ([{"status": {"code": 0, "message": "ok"}, "backup": [BACKUP]}], "20200101-000000F",
     "no backup 20200101-000000F (there are: 20261202-021500F)"),
])
def test_a_repository_with_nothing_to_restore_says_why(info: list[object], label: str | None, expected: str) -> None:
    problem = restore_problem(json.dumps(info), label)
    assert problem is not None and expected in problem


def test_a_repository_with_backups_is_restorable() -> None:
    info = json.dumps([{"status": {"code": 0, "message": "ok"}, "backup": [BACKUP]}])
    assert restore_problem(info) is None and restore_problem(info, "20261202-021500F") is None


OTHER = """\
project: {project}
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
dbc:
{dbc}
"""


@pytest.mark.parametrize(("project", "dbc", "expected"), [
    ("other", "  ha: streaming", "--into {spec}: dbc.ha must be patroni"),
    ("other", "  ha: patroni\n  backups: {full: weekly}", "--into {spec}: remove dbc.backups from it"),
    ("shop", "  ha: patroni", "--into {spec}: project shop is this stack's own"),
])
def test_restore_into_refuses_an_unfit_spec_before_anything_runs(tmp_path: Path, project: str, dbc: str,
                                                                 expected: str) -> None:
    from typer.testing import CliRunner

    from deploystack.cli import app

    spec = write_spec(tmp_path, SPEC.format(backups=DEFAULT))
    other = tmp_path / "other" / "deploystack.yaml"
    other.parent.mkdir()
    (other.parent / "apps" / "backend").mkdir(parents=True)
    (other.parent / "apps" / "backend" / "manage.py").write_text("# stand-in\n")
    other.write_text(OTHER.format(project=project, dbc=dbc), encoding="utf-8")
    result = CliRunner().invoke(app, ["db", "restore", "--latest", "--into", str(other), "--yes", "-f", str(spec)],
                                env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert isinstance(result.exception, UsageError), result.output
    assert result.exception.exit_code == 2 and expected.format(spec=other) in str(result.exception)


def test_into_needs_a_point_to_restore(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from deploystack.cli import app

    spec = write_spec(tmp_path, SPEC.format(backups=DEFAULT))
    result = CliRunner().invoke(app, ["db", "restore", "--into", str(spec), "-f", str(spec)])
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == "--into needs one of --time, --latest, --backup"


def test_init_writes_daily_differential_weekly_full_backups(tmp_path: Path) -> None:
    from deploystack.operations.stack import write_starter

    (tmp_path / "manage.py").write_text("# stand-in\n")
    spec = tmp_path / "deploystack.yaml"
    write_starter(spec, force=False)
    backups = load_stack(spec).dbc.backups
    assert backups is not None and backups.target is None
    assert (backups.full, backups.diff, backups.keep_full, backups.keep_diff, backups.archive_timeout) == (
        "weekly", "daily", 4, 7, 60)
    assert "backup" in {s.name for s in build_plan(load_stack(spec)).services}
    text = spec.read_text(encoding="utf-8")
    assert "# target:" in text and "PGBACKREST_CIPHER_PASS" in text  # the off-host way, commented
    with pytest.raises(UsageError):
        write_starter(spec, force=False)
