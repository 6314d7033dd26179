"""The CDC image's webhook, alone, for each forge: a push signed the way that forge signs it runs the
deploy hook; an unsigned or wrongly signed one gets 403 and runs nothing; a signed push to another branch
gets 200 and is ignored. The hook then fails to deploy (there is no stack here), which is not the point:
its log says whether it was asked to."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import pytest
import requests

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
def test_the_hook_runs_only_for_a_signed_push_to_the_branch(project: Project, tmp_path: Path, provider: str) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "hooks.json").write_text(render_template("cdc/templates/hooks.json.j2",
                                                       {"project": "shop", "provider": provider}))
    config.chmod(0o755)
    env = project.environment("cdc") | {"CDC_WEBHOOK_SECRET": SECRET, "CDC_PROVIDER": provider,
                                        "DEPLOYSTACK_SPEC": "/tmp/shop/deploystack.yaml",
                                        "DEPLOYSTACK_OUTPUT": "/tmp/shop/stack"}
    with role_container(project, "cdc", 9000, 60, volumes={str(config): "/etc/deploystack"},
                        env=env) as (container, port):
        url = f"http://127.0.0.1:{port}/hooks/shop"
        shas = {name: uuid.uuid4().hex + uuid.uuid4().hex[:8] for name in ("unsigned", "forged", "other", "good")}

        def push(name: str, branch: str = "master", headers: dict[str, str] | None = None) -> int:
            body = json.dumps({"ref": f"refs/heads/{branch}", "after": shas[name]}).encode()
            return requests.post(url, data=body, timeout=10,
                                 headers={"Content-Type": "application/json", **(headers or {})}).status_code

        assert push("unsigned") == 403
        assert push("forged", headers=signed(provider, b"another body", "not the secret")) == 403
        other_body = json.dumps({"ref": "refs/heads/feature", "after": shas["other"]}).encode()
        assert push("other", "feature", signed(provider, other_body, SECRET)) == 200
        good_body = json.dumps({"ref": "refs/heads/master", "after": shas["good"]}).encode()
        assert push("good", headers=signed(provider, good_body, SECRET)) == 200

        log = logs_after(container, f"deploy of {shas['good']} queued".encode())
        assert f"deploy of {shas['good']} queued".encode() in log
        assert f"ignoring the push of {shas['other']}".encode() in log
        for name in ("unsigned", "forged", "other"):
            assert f"deploy of {shas[name]}".encode() not in log
