"""The disaster drill (issue 17) on real Docker, Patroni, pgBackRest and SeaweedFS, and `db restore --into`.

An S3 store of its own plays the off-host target: a SeaweedFS container of the stack's media image, serving
HTTPS (a self-signed certificate) on the Docker bridge's gateway address only, reached by the stack's backup
service through its egress network as it would reach a store on another host. The first stack (Patroni, one
app) archives there through `dbc.backups.target`, its keys in the environment, never in the spec. Rows are
written (each acknowledged), a WAL switch is archived, and the first stack is destroyed with its volumes and
its output folder: only the repository's cipher passphrase is kept, as docs/db.md tells a user to. A fresh
stack from the same spec comes up empty over the surviving repository (the scheduler waits for a restore
instead of backing up over it), `db restore --latest` brings every acknowledged row archived before the
disaster back. Then that stack's repository restores `--into` a new stack made from another spec.

Media: objects written before the disaster are in a scheduled media snapshot on the same target
(`dbc.backups.media`), and `media restore --latest` on the fresh stack gives them back byte for byte. Run
with -s for the timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors
import pytest
import urllib3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from docker.models.containers import Container
from ruamel.yaml import YAML

from deploystack.operations import Session
from deploystack.operations import stack as stack_ops
from deploystack.render.envfile import read_env
from deploystack.render.project import ENV_FILE
from deploystack.testing import LogReporter, StackUnderTest, free_port
from tests.conftest import eventually
from tests.e2e.test_media_backups import contents, shell  # the backup service's rclone remote `media`
from tests.e2e.test_offsite import gateway_address  # the default bridge's, also when dockerd recorded only its subnet

pytestmark = pytest.mark.docker

FIXTURES = Path(__file__).parents[1] / "fixtures/projects"
SPEC = FIXTURES / "drill-offsite/deploystack.yaml"
INTO_SPEC = FIXTURES / "drill-into/deploystack.yaml"
KEYS = {"DRILL_S3_ACCESS_KEY": "drillaccess0001", "DRILL_S3_SECRET_KEY": "drill-secret-key-0123456789"}
BUCKET = "drill"
CIPHER = "PGBACKREST_CIPHER_PASS"


@dataclass
class OffHost:
    endpoint: str  # host:port, HTTPS
    container: Container
    s3: Any  # a boto3 S3 client of it


def cli(spec: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(spec)],
                            capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"deploystack {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def answers(call: Callable[[], object]) -> bool:
    """The store answered `call` (botocore raises while SeaweedFS starts)."""
    try:
        call()
    except (BotoCoreError, ClientError):
        return False
    return True


def point_at(under_test: StackUnderTest, endpoint: str) -> None:
    """The derived spec's target endpoint: the off-host store of this run."""
    yaml = YAML(typ="rt")
    data = yaml.load(under_test.spec.read_text(encoding="utf-8"))
    data["dbc"]["backups"]["target"]["endpoint"] = endpoint
    with under_test.spec.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)


@pytest.fixture(scope="module")
def keys() -> Iterator[None]:
    """The target's keys where `access_key_env`/`secret_key_env` name them: deploystack's environment."""
    saved = {name: os.environ.get(name) for name in KEYS}
    os.environ.update(KEYS)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def project() -> str:
    """The project of the destroyed stack and of the fresh one (the repository's path is named after it)."""
    return f"drill-{os.urandom(3).hex()}"


@pytest.fixture(scope="module")
def offhost(keys: None, project: str) -> Iterator[OffHost]:
    """SeaweedFS from the stack's media image on the host's network, S3 over HTTPS on the bridge gateway's
    address only (no other interface), every other port of it on loopback; removed afterwards."""
    client = docker.from_env(timeout=300)  # the shared engine can be slow to answer
    gateway = gateway_address(client)
    probe = StackUnderTest(SPEC, project=project)  # builds the stack's images and names the media one; not started
    folder = Path(tempfile.mkdtemp(prefix="deploystack-drill-s3-"))
    name = f"deploystack-drill-s3-{project}"
    try:
        point_at(probe, f"{gateway}:9")
        built = Session(probe.target, LogReporter())
        stack_ops.build(built)
        image = built.rendered.images["media"]
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", f"/CN={gateway}", "-addext", f"subjectAltName=IP:{gateway}",
                        "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                       check=True, capture_output=True)
        folder.chmod(0o755)  # mkdtemp's 0700 would keep the container's seaweed user out
        (folder / "key.pem").chmod(0o644)  # read by the seaweed user of the container
        ports = [free_port() for _ in range(8)]
        names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "s3.port", "s3.port.grpc"]
        container = client.containers.run(
            image, name=name, network_mode="host", detach=True,
            command=[*(f"-{n}={p}" for n, p in zip(names, ports, strict=True)), f"-s3.ip.bind={gateway}",
                     "-s3.cert.file=/tls/cert.pem", "-s3.key.file=/tls/key.pem", "-metricsPort=0"],
            environment={"S3_ACCESS_KEY": KEYS["DRILL_S3_ACCESS_KEY"], "S3_SECRET_KEY": KEYS["DRILL_S3_SECRET_KEY"]},
            volumes={str(folder): {"bind": "/tls", "mode": "ro"}}, labels={"io.deploystack.test": "drill"},
        )
        endpoint = f"{gateway}:{ports[6]}"
        urllib3.disable_warnings()
        s3 = boto3.client("s3", endpoint_url=f"https://{endpoint}", region_name="us-east-1", verify=False,
                          config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 1}),
                          aws_access_key_id=KEYS["DRILL_S3_ACCESS_KEY"],
                          aws_secret_access_key=KEYS["DRILL_S3_SECRET_KEY"])
        # A create that failed late may have made the bucket: its retry is then refused, the bucket is there.
        try:
            eventually(lambda: answers(lambda: s3.create_bucket(Bucket=BUCKET)) or answers(
                lambda: s3.head_bucket(Bucket=BUCKET)), "the off-host store's bucket", timeout=180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{container.logs(tail=30).decode(errors='replace')}") from None
        yield OffHost(endpoint, container, s3)
    finally:
        with contextlib.suppress(docker.errors.NotFound):  # also when run() timed out after creating it
            client.containers.get(name).remove(force=True, v=True)
        shutil.rmtree(probe.folder, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


leaders: dict[Path, str] = {}  # each stack's leader, read once (`db status` is slow on a shared machine)


def sql(under_test: StackUnderTest, query: str) -> str:
    """`query` on the leader, in the app's own database, as the superuser."""
    if under_test.spec not in leaders:
        leaders[under_test.spec] = json.loads(cli(under_test.spec, "db", "status", "--json").stdout)["leader"]
    code, out = under_test.exec(leaders[under_test.spec], ["psql", "-X", "-U", "postgres", "-d", "backend", "-v",
                                                           "ON_ERROR_STOP=1", "-qtAc", query])
    assert code == 0, out
    return out.strip()


def backups(spec: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(spec, "db", "backups", "--json").stdout)
    return data


def archive_now(under_test: StackUnderTest) -> str:
    """Switch the WAL segment and wait until it is in the repository: everything before is archived."""
    spec = under_test.spec
    # The segment holding everything written so far; the switch closes it (a no-op when archive_timeout
    # switched it already).
    segment = sql(under_test, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql(under_test, "SELECT pg_switch_wal()")
    started = time.monotonic()

    def archived() -> bool:
        archive = json.loads(cli(spec, "db", "status", "--json").stdout)["archive"]
        return bool(archive["last_archived_wal"]) and archive["last_archived_wal"] >= segment

    eventually(archived, f"segment {segment} archived off-host", timeout=120)
    print(f"\nsegment {segment} archived off-host {time.monotonic() - started:.2f}s after the switch")
    return segment


# -- media: snapshots to the same off-host target (dbc.backups.media) ------------------------------------

MEDIA_OBJECTS = 20


def check_media_before(under_test: StackUnderTest) -> dict[str, str]:
    """Objects of random bytes in the media store, then a scheduled media snapshot off-host that holds them
    all; what they are (MD5 of the bytes read back) for check_media_after."""
    shell(under_test, f"for i in $(seq 1 {MEDIA_OBJECTS}); do head -c $((i * 3000)) /dev/urandom | "
                      "rclone rcat --log-level ERROR media:media/drill/obj-$i.bin; done")
    written = contents(under_test)
    assert len(written) == MEDIA_OBJECTS, written
    after = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

    def snapshot() -> dict[str, Any] | None:
        found = json.loads(cli(under_test.spec, "media", "backups", "--json").stdout)["snapshots"]
        return next((s for s in found if s["name"] > after and s["objects"] == MEDIA_OBJECTS), None)

    taken = eventually(snapshot, "a media snapshot off-host after the upload", timeout=300)
    print(f"\nmedia snapshot {taken['name']} off-host: {taken['objects']} objects")
    return written


def check_media_after(under_test: StackUnderTest, written: dict[str, str]) -> None:
    """`media restore --latest` on the fresh stack: every object back, byte-identical."""
    assert contents(under_test) == {}  # the fresh store is empty until the restore
    cli(under_test.spec, "media", "restore", "--latest", "--yes")
    assert contents(under_test) == written


# -- the drill ------------------------------------------------------------------------------------------


def test_disaster_drill_then_restore_into_another_stack(offhost: OffHost, project: str) -> None:
    first = StackUnderTest(SPEC, project=project)
    fresh = StackUnderTest(SPEC, project=project)
    other = StackUnderTest(INTO_SPEC)
    try:
        for under_test in (first, fresh):
            point_at(under_test, offhost.endpoint)
        first.start()
        where = backups(first.spec)
        assert where["repository"] == f"s3://{BUCKET}/{project} at {offhost.endpoint} (off-host)"
        assert where["off_host"] is True
        eventually(lambda: backups(first.spec)["backups"], "the first full backup, off-host", timeout=300)
        # Acknowledged rows: each INSERT's transaction committed before psql returned 0.
        sql(first, "CREATE TABLE ledger (id int PRIMARY KEY, note text)")
        acknowledged: list[int] = []
        for batch in range(4):  # a transaction of 250 rows a batch, acknowledged when psql returns 0
            sql(first, "; ".join(f"INSERT INTO ledger SELECT g, 'batch {batch}' FROM generate_series({n * 50 + 1}, "
                                 f"{n * 50 + 50}) g" for n in range(batch * 5, batch * 5 + 5)))
            acknowledged += range(batch * 250 + 1, batch * 250 + 251)
        archive_now(first)
        media = check_media_before(first)
        cipher = read_env(first.target.output / ENV_FILE)[CIPHER]  # the one thing kept apart, as advised

        # The disaster: containers, volumes and the output folder (keys, certificates, .env) gone.
        first.stop()
        left = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project="
                               f"{project}"], capture_output=True, text=True, check=True).stdout.split()
        assert left == [] and not first.target.output.exists()

        # A fresh stack from the same spec, over the surviving repository, with only the passphrase kept.
        fresh.target.output.mkdir(parents=True)
        (fresh.target.output / ENV_FILE).write_text(f"{CIPHER}={cipher}\n", encoding="utf-8")
        started = time.monotonic()
        fresh.start()
        print(f"\nfresh stack up in {time.monotonic() - started:.1f}s")
        report = backups(fresh.spec)
        assert report["backups"], report  # the destroyed stack's, read off-host
        assert any("restore-pending" in problem for problem in report["problems"]), report["problems"]
        assert sql(fresh, "SELECT to_regclass('ledger') IS NULL") == "t"  # empty: not restored yet
        # Refused before anything stops: a backup the repository does not hold, an unreachable target.
        refused = cli(fresh.spec, "db", "restore", "--backup", "20200101-000000F", "--yes", check=False)
        assert refused.returncode == 4 and "no backup 20200101-000000F" in refused.stderr + refused.stdout
        offhost.container.stop(timeout=5)
        try:
            refused = cli(fresh.spec, "db", "restore", "--latest", "--yes", check=False)
        finally:
            offhost.container.start()
        said = refused.stdout + refused.stderr
        assert refused.returncode == 4 and "nothing was stopped" in said, said
        print(f"\nan unreachable target: {said.strip()[-300:]}")
        assert fresh.exec("backend", ["true"])[0] == 0  # the app was not stopped
        eventually(lambda: answers(lambda: offhost.s3.head_bucket(Bucket=BUCKET)), "the off-host store back",
                   timeout=120)
        started = time.monotonic()
        out = cli(fresh.spec, "db", "restore", "--latest", "--yes").stdout
        leaders.clear()
        print(f"\ndb restore --latest on the fresh stack: {time.monotonic() - started:.1f}s\n{out}")
        present = {int(n) for n in sql(fresh, "SELECT id FROM ledger").split()}
        assert set(acknowledged) <= present, f"lost: {sorted(set(acknowledged) - present)[:20]}"
        check_media_after(fresh, media)
        # The fresh stack works with its own secrets: the app answers, writes are archived again, and the
        # repository is this cluster's again (a backup of it can be verified).
        eventually(lambda: fresh.exec("backend", ["apc-health"])[0] == 0, "the app after the restore", timeout=120)
        sql(fresh, "INSERT INTO ledger VALUES (100000, 'after the drill')")
        archive_now(fresh)
        status = json.loads(cli(fresh.spec, "db", "status", "--json").stdout)
        assert status["archive"]["failing"] is False
        assert not any("restore-pending" in p for p in backups(fresh.spec)["problems"])

        # --into: the fresh stack's repository restored into a new stack of another spec.
        started = time.monotonic()
        out = cli(fresh.spec, "db", "restore", "--latest", "--into", str(other.spec), "--yes").stdout
        print(f"\ndb restore --latest --into (the other stack brought up first): {time.monotonic() - started:.1f}s"
              f"\n{out}")
        assert sql(other, "SELECT count(*), max(id) FROM ledger") == f"{len(acknowledged) + 1}|100000"
        eventually(lambda: other.exec("backend", ["apc-health"])[0] == 0, "the other stack's app", timeout=120)
        # The source stack is untouched: same rows, still archiving to its repository.
        assert sql(fresh, "SELECT count(*) FROM ledger") == f"{len(acknowledged) + 1}"
        assert json.loads(cli(fresh.spec, "db", "status", "--json").stdout)["archive"]["failing"] is False
    finally:
        for under_test in (other, fresh, first):
            if under_test.folder.exists():  # stop() removes it: the first is stopped already when all went well
                under_test.stop()
        stack_ops.remove_project_images(project, LogReporter())
