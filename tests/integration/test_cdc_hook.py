"""The CDC receiver's image, alone, for each forge: a push signed the way that forge signs it is queued
(one file, with its delivery id) for the runner; an unsigned or wrongly signed one gets 403 and queues
nothing; a signed push to another branch, or one without a delivery id, gets 200 and queues nothing.
It runs as its image's non-root user, with the plan's hardening, and writes only the queue."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from deploystack.plan.cdc import DELIVERY_HEADERS, QUEUE_DIR, RECEIVER_UID
from deploystack.render.templates import render_template
from tests.integration.conftest import Project, role_container

pytestmark = pytest.mark.docker

SECRET = "integration-" + uuid.uuid4().hex


def signed(provider: str, body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"github": {"X-Hub-Signature-256": "sha256=" + digest},
            "gitea": {"X-Gitea-Signature": digest},
            "gitlab": {"X-Gitlab-Token": secret}}[provider]


def logs_after(container: object, needle: bytes, timeout: float = 10) -> bytes:
    """The container's log once it holds `needle` (or when `timeout` runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        text: bytes = container.get_wrapped_container().logs()  # type: ignore[attr-defined]
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.3)


@pytest.mark.parametrize("provider", ["github", "gitea", "gitlab"])
def test_the_receiver_queues_only_a_signed_push_to_the_branch(project: Project, tmp_path: Path,
                                                              provider: str) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "hooks.json").write_text(render_template(
        "cdc/templates/hooks.json.j2",
        {"project": "shop", "provider": provider, "delivery_header": DELIVERY_HEADERS[provider]}))
    config.chmod(0o755)
    queue = tmp_path / "queue"
    (queue / "incoming").mkdir(parents=True)
    (queue / "incoming").chmod(0o777)  # the receiver's user owns it on the real volume
    env = {"CDC_WEBHOOK_SECRET": SECRET, "CDC_PROVIDER": provider, "CDC_BRANCH": "master"}
    with role_container(project, "cdc", 9000, 60, volumes={str(config): "/etc/deploystack"},
                        writable={str(queue): QUEUE_DIR}, env=env) as (container, port):
        url = f"http://127.0.0.1:{port}/hooks/shop"
        names = ("unsigned", "forged", "other", "undelivered", "good")
        shas = {name: uuid.uuid4().hex + uuid.uuid4().hex[:8] for name in names}

        def push(name: str, branch: str = "master", sign: bool = True, delivery: str | None = "new") -> int:
            body = json.dumps({"ref": f"refs/heads/{branch}", "after": shas[name]}).encode()
            headers = {"Content-Type": "application/json", **(signed(provider, body, SECRET) if sign else {})}
            if delivery is not None:
                headers[DELIVERY_HEADERS[provider]] = f"{name}-{uuid.uuid4()}"
            return requests.post(url, data=body, timeout=10, headers=headers).status_code

        assert push("unsigned", sign=False) == 403
        forged_body = json.dumps({"ref": "refs/heads/master", "after": shas["forged"]}).encode()
        forged = {"Content-Type": "application/json", **signed(provider, b"another body", "not the secret")}
        assert requests.post(url, data=forged_body, timeout=10, headers=forged).status_code == 403
        assert push("other", "feature") == 200
        assert push("undelivered", delivery=None) == 200
        assert push("good") == 200

        log = logs_after(container, f"push of {shas['good']}".encode())
        assert f"push of {shas['good']} (delivery good-".encode() in log
        assert f"ignoring the push of {shas['other']}".encode() in log
        assert f"refusing the push of {shas['undelivered']}: no valid delivery id".encode() in log
        (queued,) = list((queue / "incoming").iterdir())
        job = json.loads(queued.read_text())
        assert job["sha"] == shas["good"] and job["ref"] == "refs/heads/master" and job["provider"] == provider
        assert job["delivery"].startswith("good-") and queued.name.endswith(f"-{job['delivery']}.json")
        assert queued.stat().st_uid == RECEIVER_UID  # written by the image's own user, not root
        code, out = container.get_wrapped_container().exec_run(["id", "-u"])
        assert (code, out.decode().strip()) == (0, str(RECEIVER_UID))
