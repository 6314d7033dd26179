"""dbc.backups (pgBackRest on Patroni): the schedule grammar, spec errors, the rendered pgbackrest.conf files,
the S3 identity limited to the bucket `backups`, TLS material, and the pure readers of pgBackRest's output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from deploystack.backupinfo import parse_archiver, parse_info, parse_state, restore_time
from deploystack.errors import SpecError, UsageError
from deploystack.plan import backups as b
from deploystack.plan import build_plan
from deploystack.plan.model import ProjectPlan
from deploystack.render.project import config_text, render_project
from deploystack.render.state import read_output_state
from deploystack.spec import Stack, load_stack
from tests.conftest import write_spec

SPEC = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
dbc:
  ha: patroni
  replicas: 1
  backups:
{backups}
"""
DEFAULT = "    full: weekly\n    diff: daily\n    keep_full: 4\n"


def stack_of(folder: Path, backups: str = DEFAULT) -> Stack:
    return load_stack(write_spec(folder, SPEC.format(backups=backups)))


def conf(plan: ProjectPlan, path: str) -> dict[str, dict[str, str]]:
    """An ini file as {section: {key: value}}."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in config_text(next(c for c in plan.configs if c.path == path)).splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#") and current is not None:
            key, _, value = line.partition("=")
            assert key not in current, f"{key} twice in [{line}]"
            current[key] = value
    return sections


@pytest.mark.parametrize(("schedule", "expected"), [
    ("hourly", 3600), ("daily", 86400), ("weekly", 604800), ("10m", 600), ("6h", 21600), ("2d", 172800),
    ("1w", 604800), ("9999m", 599940),
])
def test_schedules_are_intervals_in_seconds(schedule: str, expected: int) -> None:
    assert b.seconds(schedule) == expected


@pytest.mark.parametrize(("backups", "expected"), [
    ("    full: 0m\n", "dbc.backups.full (line 11): '0m' is not a schedule: hourly, daily, weekly, or an interval "
                      "such as 10m, 6h, 2d, 1w (minutes, hours, days, weeks; from 1 to 9999)"),
    ("    full: 30s\n", "dbc.backups.full (line 11): '30s' is not a schedule: hourly, daily, weekly, or an interval "
                       "such as 10m, 6h, 2d, 1w (minutes, hours, days, weeks; from 1 to 9999)"),
    ("    diff: monthly\n", "dbc.backups.diff (line 11): 'monthly' is not a schedule: hourly, daily, weekly, or an "
                           "interval such as 10m, 6h, 2d, 1w (minutes, hours, days, weeks; from 1 to 9999)"),
    ("    keep_full: 0\n", "dbc.backups.keep_full (line 11): must be ≥ 1 (got 0)"),
    ("    archive_timeout: 1\n", "dbc.backups.archive_timeout (line 11): must be ≥ 10 (got 1)"),
    ("    media: {schedule: 30s}\n", "dbc.backups.media.schedule (line 11): '30s' is not a schedule: hourly, daily, "
                                   "weekly, or an interval such as 10m, 6h, 2d, 1w (minutes, hours, days, weeks; "
                                   "from 1 to 9999)"),
    ("    media: {keep: 0}\n", "dbc.backups.media.keep (line 11): must be ≥ 1 (got 0)"),
    ("    media: {keep: 1000}\n", "dbc.backups.media.keep (line 11): must be ≤ 999 (got 1000)"),
    ("    media: {every: daily}\n", "dbc.backups.media.every (line 11): unknown key"),
    ("    target: {endpoint: 'https://s3.example.org', bucket: dr-db, access_key_env: K, secret_key_env: S}\n",
     "dbc.backups.target.endpoint (line 11): 'https://s3.example.org' is not host[:port] (no scheme: the store is "
     "reached over HTTPS)"),
    ("    target: {endpoint: s3.example.org, bucket: dr-db, access_key_env: 'my key', secret_key_env: S}\n",
     "dbc.backups.target.access_key_env (line 11): has the wrong form (got 'my key'): expected to match "
     "^[A-Za-z_][A-Za-z0-9_]{0,127}$"),
    # A key in plain text has no field to go in.
    ("    target: {endpoint: s3.example.org, bucket: dr-db, access_key: AKIA, access_key_env: K, secret_key_env: S}\n",
     "dbc.backups.target.access_key (line 11): unknown key (did you mean 'access_key_env'?)"),
])
def test_bad_backup_settings_name_the_field_and_line(tmp_path: Path, backups: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        stack_of(tmp_path, backups)
    assert [str(problem) for problem in caught.value.problems] == [expected]


def test_legacy_streaming_stacks_are_refused_with_the_way_out(tmp_path: Path) -> None:
    text = SPEC.format(backups=DEFAULT).replace("  ha: patroni\n", "")
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, text))
    assert [str(p) for p in caught.value.problems] == [
        "dbc (line 7): dbc.backups needs ha: patroni (PostgreSQL 17 with pgBackRest): set dbc.ha: patroni on a "
        "new stack, or move this one with `deploystack db upgrade`"]


def test_the_default_store_needs_seaweedfs_and_keeps_its_bucket_to_itself(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, SPEC.format(backups=DEFAULT) + "mmc: {enabled: false}\n"))
    assert "enable mmc (backend: seaweedfs), or give dbc.backups.target" in str(caught.value.problems[0])
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, SPEC.format(backups=DEFAULT) + "mmc: {buckets: [media, backups]}\n"))
    assert "no app or mmc bucket may take that name" in str(caught.value.problems[0])


def test_media_backups_need_the_stacks_own_seaweedfs(tmp_path: Path) -> None:
    target = ("    target: {endpoint: s3.example.org, bucket: dr-db, access_key_env: K, secret_key_env: S}\n"
              "    media: {schedule: 1h}\n")
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, SPEC.format(backups=target) + "mmc: {enabled: false}\n"))
    assert [str(p) for p in caught.value.problems] == [
        "dbc.backups.media (line 12): copies the buckets of the stack's own SeaweedFS: enable mmc (backend: "
        "seaweedfs), or drop dbc.backups.media"]
    backups = stack_of(tmp_path, DEFAULT + "    media: {}\n").dbc.backups
    assert backups is not None and backups.media is not None
    assert (backups.media.schedule, backups.media.keep) == ("daily", 7)
    assert stack_of(tmp_path).dbc.backups.media is None  # type: ignore[union-attr]


def test_nodes_archive_every_wal_segment_to_the_backup_service(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path))
    patroni = next(c for c in plan.configs if c.path == "config/patroni/patroni.yml").context
    parameters = patroni["bootstrap"]["dcs"]["postgresql"]["parameters"]  # type: ignore[index]
    assert parameters["archive_mode"] == "on"
    assert parameters["archive_command"] == "pgbackrest --stanza=db archive-push %p"
    assert parameters["archive_timeout"] == "60s"
    node = conf(plan, "config/patroni/pgbackrest.conf")
    assert node["global"]["repo1-host"] == "backup" and node["global"]["repo1-host-type"] == "tls"
    assert node["global"]["tls-server-auth"] == "backup=db"  # only the backup service's certificate
    assert node["db"]["pg1-path"] == "/var/lib/postgresql/data"
    assert not any(k.startswith(("repo1-s3", "repo1-cipher")) for k in node["global"])  # no key on a node
    env = dict(plan.service("db-node-1").environment)
    assert env["PGBACKREST_CONFIG"] == "/etc/deploystack/pgbackrest.conf"
    assert not any("S3" in k or "CIPHER" in k for k in env)


def test_the_backup_service_holds_the_encrypted_repository_on_the_local_bucket(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path, DEFAULT + "    keep_diff: 7\n"))
    repo = conf(plan, "config/backup/pgbackrest.conf")
    g = repo["global"]
    assert (g["repo1-type"], g["repo1-s3-bucket"], g["repo1-s3-uri-style"], g["repo1-path"]) == (
        "s3", "backups", "path", "/shop")
    assert (g["repo1-cipher-type"], g["repo1-retention-full"], g["repo1-retention-diff"]) == ("aes-256-cbc", "4", "7")
    assert (g["repo1-storage-host"], g["repo1-storage-port"]) == ("127.0.0.1", "8443")  # the loopback tunnel
    assert g["tls-server-auth"] == "db-node=db"
    assert [repo["db"][f"pg{n}-host"] for n in (1, 2)] == ["db-node-1", "db-node-2"]
    env = dict(plan.service("backup").environment)
    assert env["PGBACKREST_REPO1_CIPHER_PASS"] == "${PGBACKREST_CIPHER_PASS}"
    assert env["PGBACKREST_REPO1_S3_KEY"] == "${S3_BACKUP_ACCESS_KEY}"
    assert (env["BACKUP_FULL_S"], env["BACKUP_DIFF_S"]) == ("604800", "86400")
    assert {"PGBACKREST_CIPHER_PASS", "S3_BACKUP_ACCESS_KEY", "S3_BACKUP_SECRET_KEY"} <= set(plan.secrets)
    assert not any(m.target.startswith("/var/run/docker") for m in plan.service("backup").mounts)


def test_the_repositorys_s3_identity_may_touch_its_bucket_only(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path))
    media = dict(plan.service("media").environment)
    assert media["S3_BUCKETS"] == "media,backups"
    assert media["S3_PUBLIC_BUCKETS"] == "media"
    line = next(x for x in media["S3_APP_IDENTITIES"].split(";") if x.startswith("deploystack-backups "))
    assert line.split()[1:] == ["S3_BACKUP_ACCESS_KEY", "S3_BACKUP_SECRET_KEY", "Read:backups", "List:backups",
                                "Write:backups", "Tagging:backups"]
    backend = next(x for x in media["S3_APP_IDENTITIES"].split(";") if x.startswith("app-backend "))
    assert "backups" not in backend


def test_an_off_host_target_takes_its_keys_by_name_from_an_env_file(tmp_path: Path) -> None:
    target = ("    target: {endpoint: 's3.example.org:9443', bucket: dr-db, region: eu-west-1, verify_tls: false,\n"
              "             access_key_env: DR_KEY, secret_key_env: DR_SECRET, env_file: dr.env}\n")
    stack = stack_of(tmp_path, DEFAULT + target)
    plan = build_plan(stack)
    g = conf(plan, "config/backup/pgbackrest.conf")["global"]
    assert (g["repo1-s3-endpoint"], g["repo1-storage-port"], g["repo1-s3-bucket"], g["repo1-s3-region"]) == (
        "s3.example.org", "9443", "dr-db", "eu-west-1")
    assert g["repo1-storage-verify-tls"] == "n" and "repo1-storage-host" not in g
    assert "S3_BACKUP_ACCESS_KEY" not in plan.secrets and "backups" not in dict(
        plan.service("media").environment)["S3_BUCKETS"]
    spec = tmp_path / "deploystack.yaml"
    with pytest.raises(UsageError, match="DR_KEY, DR_SECRET not set in"):
        (tmp_path / "dr.env").write_text("OTHER=1\n")
        render_project(stack, spec, tmp_path / "stack", b"", environ={},
                       state=read_output_state(tmp_path / "stack", stack))
    (tmp_path / "dr.env").write_text("DR_KEY=AKIAEXAMPLE\nDR_SECRET=s3cr3t\n")
    rendered = render_project(stack, spec, tmp_path / "stack", b"", environ={},
                              state=read_output_state(tmp_path / "stack", stack))
    assert rendered.secrets["BACKUP_TARGET_ACCESS_KEY"] == "AKIAEXAMPLE"
    assert "s3cr3t" not in spec.read_text() and "s3cr3t" not in rendered.files["compose.yaml"].data.decode()


def test_tls_certificates_name_every_possible_node_and_are_kept(tmp_path: Path) -> None:
    stack = stack_of(tmp_path)
    spec = tmp_path / "deploystack.yaml"
    first = render_project(stack, spec, tmp_path / "stack", b"", environ={},
                           state=read_output_state(tmp_path / "stack", stack))
    node = x509.load_pem_x509_certificate(first.files["config/patroni/backup-tls/node.crt"].data)
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert "db-node-1" in names and "db-node-17" in names
    assert node.subject.rfc4514_string() == "CN=db-node"
    assert first.files["config/backup/tls/backup.key"].mode == 0o600
    for path, data in first.files.items():
        target = tmp_path / "stack" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.data)
    again = render_project(stack, spec, tmp_path / "stack", b"", environ={},
                           state=read_output_state(tmp_path / "stack", stack))
    node_crt = "config/patroni/backup-tls/node.crt"
    assert again.files[node_crt].data == first.files[node_crt].data


INFO = [{"name": "db", "backup": [
    {"label": "20261202-021500F", "type": "full", "timestamp": {"start": 1795400100, "stop": 1795400110},
     "info": {"size": 31457280, "repository": {"delta": 4194304, "size": 4194304}},
     "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000003"},
     "annotation": {"deploystack-record": "{}"}},
    {"label": "20261202-021500F_20261202-022000D", "type": "diff",
     "timestamp": {"start": 1795400400, "stop": 1795400405},
     "info": {"size": 31457280, "repository": {"delta": 65536}}, "archive": {}},
]}]


def test_pgbackrest_info_and_the_window() -> None:
    backups = parse_info(json.dumps(INFO))
    assert [(x.label, x.type, x.size, x.repo_size, x.recorded) for x in backups] == [
        ("20261202-021500F", "full", 31457280, 4194304, True),
        ("20261202-021500F_20261202-022000D", "diff", 31457280, 65536, False)]
    assert parse_info("[]") == []
    archiver = parse_archiver({"archived_count": "12", "last_archived_wal": "000000010000000000000009",
                               "last_archived_time": "2026-12-02 02:25:00+00", "failed_count": "3",
                               "last_failed_wal": "000000010000000000000005",
                               "last_failed_time": "2026-12-02 02:21:00+00", "pending": "2",
                               "segment_size": "16777216"})
    assert not archiver.failing and archiver.pending_bytes == 2 * 16777216
    failing = parse_archiver({"archived_count": "0", "failed_count": "4", "last_failed_wal": "0000000100000000000001",
                              "last_failed_time": "2026-12-02 02:21:00+00", "pending": "5", "segment_size": ""})
    assert failing.failing and failing.pending_bytes == 5 * (16 << 20)


def test_state_and_restore_time() -> None:
    assert parse_state("checked=1\nlast_error=ERROR: [049]: x=y\n") == {"checked": "1",
                                                                       "last_error": "ERROR: [049]: x=y"}
    assert restore_time("2026-12-01 14:01:00") == "2026-12-01 14:01:00.000000+00"
    assert restore_time("2026-12-01 16:01:00+02:00") == "2026-12-01 14:01:00.000000+00"
    assert restore_time("2026-12-01T14:01:00.250Z") == "2026-12-01 14:01:00.250000+00"
    with pytest.raises(UsageError, match="expected YYYY-MM-DD HH:MM:SS"):
        restore_time("yesterday")


def test_doctor_fails_on_a_failing_archive_and_names_the_wal_held_back() -> None:
    from deploystack.doctor import archive_check

    row = {"archived_count": "7", "last_archived_wal": "000000010000000000000004",
           "last_archived_time": "2026-12-02 02:20:00+00", "failed_count": "2",
           "last_failed_wal": "000000010000000000000005", "last_failed_time": "2026-12-02 02:21:00+00",
           "pending": "3", "segment_size": "16777216"}
    failing = archive_check(parse_archiver(row), None)
    assert failing.status == "FAIL"
    assert failing.detail == ("archive_command fails: 2 failures, last 000000010000000000000005 at 2026-12-02 "
                              "02:21:00; 3 segments (50331648 bytes) held back in pg_wal")
    healthy = archive_check(parse_archiver(row | {"last_archived_time": "2026-12-02 02:22:00+00", "pending": "0"}),
                            None)
    assert healthy.status == "ok" and "7 segments archived" in healthy.detail
    assert archive_check(None, "project x is not up").status == "warn"


class _Backup:
    def __init__(self, health: dict[str, Any]) -> None:
        self.attrs = {"State": {"Status": "running", "Health": health}}


def test_the_backup_services_health_check_is_what_doctor_and_db_status_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missed or failed backup: the engine's record of backup-health (its last output, lib.sh's die line)."""
    from deploystack.doctor import schedule_check
    from deploystack.engine import backups as engine_backups

    said = "2026-12-02T14:00:00Z backup-health: error: the full backup due 400s ago was missed\n"
    monkeypatch.setattr(engine_backups, "backup_service", lambda client, project: _Backup(
        {"Status": "unhealthy", "Log": [{"ExitCode": 0, "Output": ""}, {"ExitCode": 1, "Output": said}]}))
    problem = engine_backups.scheduler_health(None, "shop")  # type: ignore[arg-type]
    assert problem == "the full backup due 400s ago was missed"
    check = schedule_check(problem)
    assert (check.status, check.detail) == ("FAIL", problem)
    for status in ("healthy", "starting"):  # starting: a new container, not a failure yet
        monkeypatch.setattr(engine_backups, "backup_service", lambda client, project, s=status: _Backup(
            {"Status": s, "Log": []}))
        assert engine_backups.scheduler_health(None, "shop") is None  # type: ignore[arg-type]
    assert schedule_check(None).status == "ok"

    def gone(client: object, project: str) -> None:
        raise UsageError("project shop has no running backup container (is the stack up? deploystack ps)")

    monkeypatch.setattr(engine_backups, "backup_service", gone)
    assert "no running backup container" in (engine_backups.scheduler_health(None, "shop") or "")  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "expected"), [
    (["db", "restore"], "db restore needs a dump file or folder, or one of --time, --latest, --backup"),
    (["db", "restore", "--latest", "--backup", "X", "--yes"], "give one of --time, --latest, --backup"),
    (["db", "restore", "--time", "2026-12-01 14:01:00"], "db restore replaces the whole database: add --yes"),
    (["db", "restore", "--time", "yesterday", "--yes"], "--time 'yesterday': expected YYYY-MM-DD HH:MM:SS"),
])
def test_restore_options_are_checked_before_anything_runs(tmp_path: Path, args: list[str], expected: str) -> None:
    """Exit 2 with the reason, no Docker reached (a confirmation without a terminal is refused, not assumed)."""
    from typer.testing import CliRunner

    from deploystack.cli import app

    spec = write_spec(tmp_path, SPEC.format(backups=DEFAULT))
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env").write_text("")
    result = CliRunner().invoke(app, [*args, "-f", str(spec)], env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    # main() maps a UsageError to its message and exit code 2 (tests/unit/test_cli.py runs it whole).
    assert isinstance(result.exception, UsageError), result.output
    assert result.exception.exit_code == 2 and expected in str(result.exception)
