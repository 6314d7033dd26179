"""dbc.backups.media: the backup service's rclone remotes and schedule, the snapshots' S3 identity (every
media bucket, no Admin), the pure readers of the snapshots' manifests, and `media restore` refusing bad
options before anything runs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import docker.errors
import pytest

from deploystack.engine import media
from deploystack.errors import EngineError, StackError, UsageError
from deploystack.mediasnapshots import check_object, parse_snapshots, pick
from deploystack.plan import build_plan
from deploystack.plan import mediabackups as mb
from deploystack.spec import Stack, load_stack
from tests.conftest import write_spec
from tests.unit.test_backups import DEFAULT, SPEC

MEDIA = "    media: {schedule: 6h, keep: 3}\n"
TARGET = ("    target: {endpoint: 's3.example.org:9443', bucket: dr-db, region: eu-west-1, verify_tls: false,\n"
          "             path_style: false, access_key_env: DR_KEY, secret_key_env: DR_SECRET}\n")


def stack_of(folder: Path, backups: str, extra: str = "") -> Stack:
    return load_stack(write_spec(folder, SPEC.format(backups=backups) + extra))


def test_snapshots_go_to_the_local_backups_bucket_on_their_schedule(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path, DEFAULT + MEDIA, "mmc: {buckets: [media, reports]}\n"))
    env = dict(plan.service("backup").environment)
    assert (env["MEDIA_BACKUP_S"], env["MEDIA_BACKUP_KEEP"]) == ("21600", "3")
    assert (env["MEDIA_BACKUP_BUCKETS"], env["MEDIA_BACKUP_PATH"]) == ("media,reports", "backups/shop/media")
    assert env["RCLONE_CONFIG_MEDIA_ENDPOINT"] == env["RCLONE_CONFIG_TARGET_ENDPOINT"] == "http://media:8333"
    assert env["RCLONE_CONFIG_MEDIA_ACCESS_KEY_ID"] == "${S3_MEDIA_BACKUP_ACCESS_KEY}"
    assert env["RCLONE_CONFIG_TARGET_ACCESS_KEY_ID"] == "${S3_BACKUP_ACCESS_KEY}"  # the repository's identity
    assert env["RCLONE_CONFIG_TARGET_NO_CHECK_BUCKET"] == "true" and "RCLONE_NO_CHECK_CERTIFICATE" not in env
    assert set(mb.SECRETS) <= set(plan.secrets)
    media = dict(plan.service("media").environment)
    line = next(x for x in media["S3_APP_IDENTITIES"].split(";") if x.startswith(f"{mb.IDENTITY} "))
    assert line.split()[1:] == [*mb.SECRETS, "Read:media", "List:media", "Write:media", "Tagging:media",
                                "Read:reports", "List:reports", "Write:reports", "Tagging:reports"]
    assert not any(a.startswith("Admin") or a.endswith(":backups") for a in line.split())
    assert media["S3_MEDIA_BACKUP_ACCESS_KEY"] == "${S3_MEDIA_BACKUP_ACCESS_KEY}"


def test_snapshots_follow_an_off_host_target(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path, DEFAULT + TARGET + MEDIA))
    env = dict(plan.service("backup").environment)
    assert env["RCLONE_CONFIG_TARGET_ENDPOINT"] == "https://s3.example.org:9443"
    assert (env["RCLONE_CONFIG_TARGET_REGION"], env["RCLONE_CONFIG_TARGET_FORCE_PATH_STYLE"]) == ("eu-west-1", "false")
    assert env["RCLONE_CONFIG_TARGET_ACCESS_KEY_ID"] == "${BACKUP_TARGET_ACCESS_KEY}"
    assert env["RCLONE_NO_CHECK_CERTIFICATE"] == "true"
    assert env["MEDIA_BACKUP_PATH"] == "dr-db/shop/media"
    assert "media" in plan.service("backup").depends_on  # it reads the buckets even with the store elsewhere


def test_without_media_backups_nothing_changes(tmp_path: Path) -> None:
    plan = build_plan(stack_of(tmp_path, DEFAULT))
    assert not any(k.startswith(("RCLONE_", "MEDIA_")) for k, _ in plan.service("backup").environment)
    assert not set(mb.SECRETS) & set(plan.secrets)
    assert mb.IDENTITY not in dict(plan.service("media").environment)["S3_APP_IDENTITIES"]


def manifest(name: str, started: int, objects: int) -> dict[str, object]:
    return {"name": name, "time": "", "started": started, "seconds": 2, "objects": objects, "bytes": objects * 10,
            "buckets": {"media": {"objects": objects, "bytes": objects * 10}}, "copied_from": None}


def test_manifests_are_read_and_the_restore_picks_the_newest_at_or_before_the_time() -> None:
    t0 = int(dt.datetime(2026, 12, 2, 3, 0, tzinfo=dt.UTC).timestamp())
    found = parse_snapshots(json.dumps([manifest("20261202T040000Z", t0 + 3600, 5),
                                        manifest("20261202T030000Z", t0, 3)]))
    assert [s.name for s in found] == ["20261202T030000Z", "20261202T040000Z"]  # oldest first
    assert found[0].as_dict()["time"] == "2026-12-02 03:00:00" and found[1].buckets["media"]["objects"] == 5
    assert pick(found, None).name == "20261202T040000Z"
    # Each took 2 s: the one started at 04:00:00 holds nothing written after 04:00:02.
    assert pick(found, dt.datetime(2026, 12, 2, 4, 0, 1, tzinfo=dt.UTC)).name == "20261202T030000Z"
    assert pick(found, dt.datetime(2026, 12, 2, 4, 0, 2, tzinfo=dt.UTC)).name == "20261202T040000Z"
    with pytest.raises(UsageError, match="no media snapshot ended at or before 2026-12-02 03:00:01 UTC: the "
                                         "oldest kept ended at 2026-12-02 03:00:02 UTC"):
        pick(found, dt.datetime(2026, 12, 2, 3, 0, 1, tzinfo=dt.UTC))
    with pytest.raises(UsageError, match="no media snapshot in the store yet"):
        pick([], None)
    with pytest.raises(StackError, match="could not be read"):
        parse_snapshots('[{"name": "x"}]')
    assert check_object("media/a/b.png") == "media/a/b.png"
    for bad in ("media", "/key", "media/", "media/dir/"):
        with pytest.raises(UsageError, match="expected BUCKET/KEY"):
            check_object(bad)


@pytest.mark.parametrize(("args", "expected"), [
    (["media", "restore"], "media restore needs a backup file or folder, or --time/--latest"),
    (["media", "restore", "x.tar.gz", "--latest", "--yes"], "give one of --time, --latest, without a backup path"),
    (["media", "restore", "--latest", "--time", "2026-12-01 14:01:00", "--yes"], "give one of --time, --latest"),
    (["media", "restore", "--latest"], "media restore replaces the media objects: add --yes to confirm"),
    (["media", "restore", "--time", "yesterday", "--yes"], "--time 'yesterday': expected YYYY-MM-DD HH:MM:SS"),
    (["media", "restore", "--latest", "--object", "media", "--yes"], "--object 'media': expected BUCKET/KEY"),
    (["media", "restore", "--latest", "--object", "other/k", "--yes"], "bucket 'other' is not in mmc.buckets"),
])
def test_restore_options_are_checked_before_anything_runs(tmp_path: Path, args: list[str], expected: str) -> None:
    from typer.testing import CliRunner

    from deploystack.cli import app

    spec = write_spec(tmp_path, SPEC.format(backups=DEFAULT + MEDIA))
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env").write_text("")
    result = CliRunner().invoke(app, [*args, "-f", str(spec)], env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert isinstance(result.exception, UsageError), result.output
    assert result.exception.exit_code == 2 and expected in str(result.exception)


def test_media_backups_commands_need_the_spec_field(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from deploystack.cli import app

    spec = write_spec(tmp_path, SPEC.format(backups=DEFAULT))
    for args in (["media", "backups"], ["media", "restore", "--latest", "--yes"]):
        result = CliRunner().invoke(app, [*args, "-f", str(spec)], env={"DOCKER_HOST": "unix:///nonexistent.sock"})
        assert isinstance(result.exception, UsageError), result.output
        assert "needs dbc.backups.media" in str(result.exception)


class _Freezer:
    """A container whose pause fails with `errors` (in turn) before it works."""

    name = "demo-media-1"

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.paused = False

    def pause(self) -> None:
        if self.errors:
            raise docker.errors.APIError(self.errors.pop(0))
        self.paused = True


def test_a_pause_the_freezer_gives_up_on_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media.time, "sleep", lambda _: None)
    said: list[str] = []
    container = _Freezer("OCI runtime pause failed: unable to freeze: unknown", "unable to freeze")
    media._pause(container, _Said(said))  # type: ignore[arg-type]
    assert container.paused and len(said) == 2


def test_a_pause_refused_otherwise_or_too_often_fails_naming_the_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media.time, "sleep", lambda _: None)
    with pytest.raises(EngineError, match="pausing demo-media-1: .*is not running"):
        media._pause(_Freezer("container is not running"), _Said([]))  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="unable to freeze"):
        media._pause(_Freezer(*["unable to freeze"] * media.PAUSE_ATTEMPTS), _Said([]))  # type: ignore[arg-type]


class _Said:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def step(self, text: str) -> None:
        self.lines.append(text)

    def detail(self, text: str) -> None:
        self.lines.append(text)
