"""Each app's own S3 key on the real media image (SeaweedFS), as the plan configures it: every app reads
the media bucket, writes there only under its own prefix, and reads and writes only its own buckets.
A key of one app cannot read, list or write another app's bucket, nor its files in the media bucket."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from ruamel.yaml import YAML

from deploystack.plan.project import build_plan
from deploystack.plan.tenancy import s3_key_secrets
from deploystack.spec.loader import validate_text
from tests.conftest import BLUEPRINTS
from tests.integration.conftest import Project, role_container

pytestmark = pytest.mark.docker
pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

from tests.integration.test_roles import s3_client  # noqa: E402

SPEC = BLUEPRINTS / "default" / "deploystack.yaml"
KEYS = {name: secrets.token_hex(10 if name.startswith("S3_ACCESS") else 20)
        for app in ("backend", "frontend", "bff") for name in s3_key_secrets(app)} | {
    "S3_ACCESS_KEY": secrets.token_hex(10), "S3_SECRET_KEY": secrets.token_hex(20)}


def media_environment() -> dict[str, str]:
    """The media service's environment for the default blueprint with a private bucket per app."""
    yaml = YAML()
    data = yaml.load(SPEC.read_text())
    data["mmc"]["buckets"] = ["media", "backend-files", "frontend-files"]
    data["apc"]["apps"]["backend"]["buckets"] = ["backend-files"]
    data["apc"]["apps"]["frontend"]["buckets"] = ["frontend-files"]
    import io
    text = io.StringIO()
    yaml.dump(data, text)
    stack = validate_text(text.getvalue(), SPEC)
    env = dict(build_plan(stack).service("media").environment)
    return {key: re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: KEYS[m.group(1)], value) for key, value in env.items()}


@pytest.fixture(scope="module")
def clients(project: Project) -> Iterator[dict[str, Any]]:
    with role_container(project, "media", 8333, timeout_s=120, env=media_environment()) as (_, port):
        made = {app: s3_client(port, KEYS[s3_key_secrets(app)[0]], KEYS[s3_key_secrets(app)[1]])
                for app in ("backend", "frontend", "bff")}
        made["admin"] = s3_client(port, KEYS["S3_ACCESS_KEY"], KEYS["S3_SECRET_KEY"])
        wanted = {"media", "backend-files", "frontend-files"}
        deadline = time.monotonic() + 60
        while not wanted <= {b["Name"] for b in made["admin"].list_buckets()["Buckets"]}:
            assert time.monotonic() < deadline, "buckets not created within 60 s"
            time.sleep(0.5)
        made["port"] = port
        yield made


def denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "AccessDenied"
    return False


def test_an_app_reads_and_writes_its_own_bucket(clients: dict[str, Any]) -> None:
    key = f"it/{uuid.uuid4().hex}"
    clients["backend"].put_object(Bucket="backend-files", Key=key, Body=b"backend's own")
    assert clients["backend"].get_object(Bucket="backend-files", Key=key)["Body"].read() == b"backend's own"
    assert [o["Key"] for o in clients["backend"].list_objects_v2(Bucket="backend-files")["Contents"]] == [key]


def test_an_app_key_cannot_read_list_or_write_another_apps_bucket(clients: dict[str, Any]) -> None:
    key = f"it/{uuid.uuid4().hex}"
    clients["frontend"].put_object(Bucket="frontend-files", Key=key, Body=b"frontend's")
    for app in ("backend", "bff"):
        s3 = clients[app]
        assert denied(s3.get_object, Bucket="frontend-files", Key=key), app
        assert denied(s3.list_objects_v2, Bucket="frontend-files"), app
        assert denied(s3.put_object, Bucket="frontend-files", Key="intruder", Body=b"x"), app
        assert denied(s3.delete_object, Bucket="frontend-files", Key=key), app
    assert clients["frontend"].get_object(Bucket="frontend-files", Key=key)["Body"].read() == b"frontend's"


def test_in_the_media_bucket_an_app_writes_only_under_its_own_prefix(clients: dict[str, Any]) -> None:
    mine = f"backend/{uuid.uuid4().hex}.png"
    clients["backend"].put_object(Bucket="media", Key=mine, Body=b"png")
    clients["frontend"].put_object(Bucket="media", Key=f"frontend/{uuid.uuid4().hex}.png", Body=b"png")
    assert denied(clients["frontend"].put_object, Bucket="media", Key=mine, Body=b"overwritten")
    assert denied(clients["frontend"].delete_object, Bucket="media", Key=mine)
    assert denied(clients["bff"].put_object, Bucket="media", Key="at-the-top.png", Body=b"x")
    # the bucket is public through the LBC anyway: reading it is everyone's
    assert clients["bff"].get_object(Bucket="media", Key=mine)["Body"].read() == b"png"


def test_no_app_key_administers_the_store(clients: dict[str, Any]) -> None:
    assert denied(clients["backend"].create_bucket, Bucket=f"new-{uuid.uuid4().hex[:8]}")
    assert denied(clients["backend"].delete_bucket, Bucket="frontend-files")
