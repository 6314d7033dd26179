"""dbc.backups.media on real Docker, SeaweedFS and rclone: a media snapshot every minute into the bucket
`backups` of the stack's own store, listed from that store; `media restore --time T` gives back exactly the
objects (byte for byte) that existed at T, `--object` one of them; retention keeps two; a failed snapshot
makes the backup service unhealthy until one succeeds again.

One stack for the module (one Patroni node, one app). Measurements are printed: run with -s."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploystack.testing import StackUnderTest
from tests.conftest import eventually

pytestmark = pytest.mark.docker

SPEC = Path(__file__).parents[1] / "fixtures/projects/mediabackup-snapshots/deploystack.yaml"
OBJECTS = 1000  # uploaded in bulk (1 to 16 KiB each), plus a few through the app's own S3 identity
seen: list[str] = []  # every snapshot name the module saw, oldest first


@pytest.fixture(scope="module")
def stack() -> Iterator[StackUnderTest]:
    with StackUnderTest(SPEC) as under_test:
        yield under_test


def cli(stack: StackUnderTest, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(stack.spec)],
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, f"deploystack {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def snapshots(stack: StackUnderTest) -> list[dict[str, Any]]:
    data = json.loads(cli(stack, "media", "backups", "--json").stdout)
    for snapshot in data["snapshots"]:
        if snapshot["name"] not in seen:
            seen.append(snapshot["name"])
    found: list[dict[str, Any]] = data["snapshots"]
    return found


def shell(stack: StackUnderTest, script: str) -> str:
    """A shell script in the backup service, whose rclone remote `media` is the stack's SeaweedFS."""
    code, out = stack.exec("backup", ["bash", "-c", f"set -euo pipefail; {script}"])
    assert code == 0, out
    return out


def contents(stack: StackUnderTest) -> dict[str, str]:
    """Every object of the bucket `media` and the MD5 of its bytes, as read back (downloaded) now."""
    out = shell(stack, "rclone md5sum --download --log-level ERROR media:media")
    return {line[34:]: line[:32] for line in out.splitlines() if len(line) > 34}


def upload_through_the_app(stack: StackUnderTest, keys: dict[str, bytes]) -> None:
    script = ("import os, sys, json, boto3\n"
              "s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT_URL'], region_name='us-east-1',"
              " aws_access_key_id=os.environ['S3_ACCESS_KEY'], aws_secret_access_key=os.environ['S3_SECRET_KEY'])\n"
              "for key, body in json.loads(sys.argv[1]).items():\n"
              "    s3.put_object(Bucket=os.environ['S3_BUCKET'], Key=key, Body=body.encode(),"
              " ContentType='text/plain')\n")
    payload = json.dumps({k: v.decode() for k, v in keys.items()})
    code, out = stack.exec("backend", ["python", "-c", script, payload])
    assert code == 0, out


def newer_snapshot(stack: StackUnderTest, after: str, objects: int) -> dict[str, Any] | None:
    return next((s for s in reversed(snapshots(stack)) if s["name"] > after and s["objects"] == objects), None)


def test_restore_to_a_time_gives_back_exactly_the_objects_of_that_moment(stack: StackUnderTest) -> None:
    first = eventually(lambda: snapshots(stack)[-1:], "the first scheduled media snapshot", timeout=180)[0]
    store = json.loads(cli(stack, "media", "backups", "--json").stdout)
    assert store["store"].startswith("s3://backups/") and store["off_host"] is False
    # 1000 objects of 1 to 16 KiB in bulk, and three through the app (its identity writes under backend/).
    shell(stack, f"mkdir -p /tmp/objects && cd /tmp/objects && for i in $(seq -w 1 {OBJECTS}); do "
                 "head -c $(( (RANDOM % 16 + 1) * 1024 )) /dev/urandom >obj-$i.bin; done && "
                 "rclone copy --log-level ERROR /tmp/objects media:media/bulk && rm -rf /tmp/objects")
    upload_through_the_app(stack, {f"backend/note-{n}.txt": f"note {n}\n".encode() for n in range(3)})
    at_t = contents(stack)
    assert len(at_t) == OBJECTS + 3
    taken = eventually(lambda: newer_snapshot(stack, first["name"], OBJECTS + 3),
                       f"a scheduled snapshot of the {OBJECTS + 3} objects", timeout=180)
    moment = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    time.sleep(1.5)
    # After T: one object changed, one deleted, one added.
    shell(stack, "head -c 5000 /dev/urandom | rclone rcat media:media/bulk/obj-0001.bin && "
                 "rclone deletefile media:media/bulk/obj-0002.bin && "
                 "echo new | rclone rcat media:media/bulk/added-after.txt")
    changed = contents(stack)
    assert changed["bulk/obj-0001.bin"] != at_t["bulk/obj-0001.bin"] and "bulk/obj-0002.bin" not in changed
    # The next snapshot copies the unchanged objects server-side from the previous one.
    again = eventually(lambda: newer_snapshot(stack, taken["name"], OBJECTS + 3),
                       "a scheduled snapshot after the changes", timeout=180)
    print(f"\nsnapshot of {taken['objects']} objects ({taken['bytes']} bytes), all new: {taken['seconds']}s; "
          f"the next one, {again['objects']} objects, 2 changed: {again['seconds']}s")

    started = time.monotonic()
    out = cli(stack, "media", "restore", "--time", moment, "--yes").stdout
    took = time.monotonic() - started
    print(f"media restore --time {moment} (snapshot {taken['name']}): {took:.1f}s\n{out}")
    assert taken["name"] in out
    assert contents(stack) == at_t  # the same keys, byte for byte: obj-0002 back, added-after gone

    # One object only: the others stay as they are.
    shell(stack, "echo scribbled | rclone rcat media:media/bulk/obj-0003.bin && "
                 "echo stays | rclone rcat media:media/bulk/untouched.txt")
    cli(stack, "media", "restore", "--latest", "--object", "media/bulk/obj-0003.bin", "--yes")
    now = contents(stack)
    assert now["bulk/obj-0003.bin"] == at_t["bulk/obj-0003.bin"] and "bulk/untouched.txt" in now
    shell(stack, "rclone deletefile media:media/bulk/untouched.txt")


def test_restore_errors_are_one_line_and_change_nothing(stack: StackUnderTest) -> None:
    before = contents(stack)
    for args, expected in [
        (["--time", "yesterday"], "--time 'yesterday': expected YYYY-MM-DD HH:MM:SS"),
        (["--time", "2001-01-01 00:00:00"], "no media snapshot ended at or before 2001-01-01 00:00:00 UTC"),
        (["--latest", "--object", "nobucket"], "--object 'nobucket': expected BUCKET/KEY"),
        (["--latest", "--object", "media/no/such/key"], "holds no object media/no/such/key"),
        (["--latest"], "add --yes to confirm"),
    ]:
        result = cli(stack, "media", "restore", *args, *([] if args == ["--latest"] else ["--yes"]), check=False)
        assert result.returncode == 2, result
        assert expected in result.stderr + result.stdout, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
    assert contents(stack) == before


def test_retention_keeps_two_and_the_service_stays_healthy(stack: StackUnderTest) -> None:
    def rotated() -> list[dict[str, Any]] | None:
        kept = snapshots(stack)
        names = [s["name"] for s in kept]
        return kept if len(seen) >= 3 and seen[0] not in names and len(kept) == 2 else None

    kept = eventually(rotated, "three snapshots seen, the oldest removed, two kept", timeout=240)
    print(f"\nsnapshots seen: {seen}; kept: {[s['name'] for s in kept]}")
    # Gone from the store itself, not only from the list: its objects too.
    listing = shell(stack, 'rclone lsf --log-level ERROR --max-depth 1 "target:$MEDIA_BACKUP_PATH"')
    assert seen[0] not in listing and kept[-1]["name"] in listing
    code, out = stack.exec("backup", ["backup-health"])
    assert code == 0, out


def media_state(stack: StackUnderTest) -> dict[str, str]:
    _, out = stack.exec("backup", ["cat", "/run/postgresql/backup-state-media"])
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def weed_shell(stack: StackUnderTest, command: str) -> None:
    code, out = stack.exec("media", ["bash", "-c", f"echo '{command}' | weed shell -master=127.0.0.1:9333"])
    assert code == 0, out


def test_a_failed_snapshot_is_loud_and_an_emptied_store_keeps_its_snapshots(stack: StackUnderTest) -> None:
    """The bucket `media` gone: the snapshot fails and backup-health says so. Made again, empty (as in a fresh
    stack): the schedule skips rather than push the good snapshots out, and `--latest` brings every object back."""
    before = contents(stack)
    # A snapshot of what the store holds now (the --time restore above came after the newest one).
    newest = snapshots(stack)[-1]["name"]
    eventually(lambda: newer_snapshot(stack, newest, OBJECTS + 3), "a snapshot after the restore", timeout=180)
    weed_shell(stack, "s3.bucket.delete -name media")

    def unhealthy() -> str | None:
        code, out = stack.exec("backup", ["backup-health"])
        return out if code != 0 and "the last media snapshot failed" in out else None

    health = eventually(unhealthy, "backup-health failing on a failed snapshot", timeout=150)
    print(f"\nbackup-health: {health.strip()}")
    kept = [s["name"] for s in snapshots(stack)]  # no snapshot is taken from here on
    weed_shell(stack, "s3.bucket.create -name media")
    eventually(lambda: media_state(stack).get("last_result") == "skipped", "the next snapshot skipped", timeout=150)
    code, out = stack.exec("backup", ["backup-health"])
    assert code == 0, out
    data = json.loads(cli(stack, "media", "backups", "--json").stdout)
    assert [s["name"] for s in data["snapshots"]] == kept
    assert any("skipped" in p for p in data["problems"])
    cli(stack, "media", "restore", "--latest", "--yes")
    assert contents(stack) == before
