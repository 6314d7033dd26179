"""Push to deploy, on a stack of its own: the backend comes from a bare git repository the test makes,
pushes reach the CDC through the LBC signed as GitHub signs them, and the version the app reports
(`GET /api/version/`, the repository's VERSION file) says which commit serves."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import docker
import pytest
import requests

from deploystack import history
from deploystack.render.envfile import read_env
from deploystack.testing import StackUnderTest
from tests.e2e.conftest import Stack
from tests.load import LoadLoop

pytestmark = pytest.mark.docker

BACKEND = Path(__file__).resolve().parents[2] / "blueprints" / "default" / "apps" / "backend"
SPEC = """\
project: cdc
apc:
  apps:
    backend:
      git: {url: repos/backend.git, branch: master}
      wsgi: backend.wsgi:application
      replicas: 2
      routes: [/api/]
acc: {redis: false, memcached: false, rabbitmq: false}
mmc: false
dbc: {replicas: 0}
cdc: {enabled: true, branch: master}
"""
GIT = ["git", "-c", "user.name=deploystack tests", "-c", "user.email=tests@deploystack.invalid"]


class Repo:
    """A working copy of the backend whose pushes go to a bare repository (the forge)."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "repos" / "backend.git"
        self.work = root / "work"
        subprocess.run(["git", "init", "--quiet", "--bare", str(self.bare)], check=True)
        shutil.copytree(BACKEND, self.work, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["git", "init", "--quiet", "--initial-branch", "master"], cwd=self.work, check=True)

    def commit(self, version: str, broken: bool = False, branch: str = "master") -> str:
        (self.work / "VERSION").write_text(version + "\n")
        wsgi = self.work / "backend" / "wsgi.py"
        text = wsgi.read_text().split("\n# broken\n")[0]
        wsgi.write_text(text + ('\n# broken\nraise RuntimeError("this commit cannot serve")\n' if broken else ""))
        self._git("add", "--all")
        self._git("commit", "--quiet", "--message", version)
        self._git("push", "--quiet", "--force", str(self.bare), f"HEAD:refs/heads/{branch}")
        return self._git("rev-parse", "HEAD")

    def _git(self, *args: str) -> str:
        return subprocess.run([*GIT, *args], cwd=self.work, check=True, capture_output=True,
                              text=True).stdout.strip()


class Forge:
    """Sends push events to the stack's hook the way GitHub does."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.secret = read_env(stack.under_test.target.output / ".env")["CDC_WEBHOOK_SECRET"]

    def push(self, sha: str, branch: str = "master", signature: str | None = "good") -> requests.Response:
        body = json.dumps({"ref": f"refs/heads/{branch}", "after": sha, "pusher": {"name": "tests"}}).encode()
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
        if signature == "good":
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature-256"] = "sha256=" + digest
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        return requests.post(f"{self.stack.https}/_cdc/hooks/{self.stack.project}", data=body, headers=headers,
                             verify=False, timeout=10)


@pytest.fixture(scope="module")
def cdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Repo, Forge]]:
    root = tmp_path_factory.mktemp("cdc")
    repo = Repo(root)
    repo.commit("v1")
    (root / "deploystack.yaml").write_text(SPEC)
    # The output folder is not beside the spec (as with `up -o /srv/cdc`): the CDC must find it anyway.
    output = tmp_path_factory.mktemp("cdc-output") / "stack"
    with StackUnderTest(root / "deploystack.yaml", output=output) as under_test:
        stack = Stack(under_test, docker.from_env())
        yield stack, repo, Forge(stack)


def version(stack: Stack) -> str:
    return str(stack.get("/api/version/").json()["version"])


def records(stack: Stack) -> list[history.Deploy]:
    return history.read(stack.under_test.target.output)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def record_of(stack: Stack, sha: str) -> history.Deploy | None:
    return next((r for r in reversed(records(stack)) if r.ref == sha), None)


def test_a_push_unsigned_wrongly_signed_or_to_another_branch_changes_nothing(
        cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, repo, forge = cdc
    assert version(stack) == "v1"
    sha = repo.commit("v-feature", branch="feature")
    before = len(records(stack))

    assert forge.push(sha, signature=None).status_code == 403
    assert forge.push(sha, signature="sha256=" + "0" * 64).status_code == 403
    other = forge.push(sha, branch="feature")
    assert other.status_code == 200  # accepted, so the forge is not banned, and ignored:

    cdc_container = stack.containers("cdc")[0]
    wait_until(lambda: b"deploys follow refs/heads/master" in cdc_container.logs(tail=50), "the push ignored", 30)
    assert version(stack) == "v1"
    assert len(records(stack)) == before
    assert f"deploy of {sha}".encode() not in cdc_container.logs()


def test_a_signed_push_to_master_deploys_under_load_with_no_failed_request(cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, repo, forge = cdc
    sha = repo.commit("v2", branch="master")
    with LoadLoop(stack.https + "/api/version/", threads=4, max_requests=30_000, max_seconds=400) as load:
        load.wait_for(200)
        assert forge.push(sha).status_code == 200
        wait_until(lambda: record_of(stack, sha) is not None, "the deploy to finish")
        load.wait_for(2000)
    result = load.result
    record = record_of(stack, sha)
    assert record is not None and record.result == history.OK, record
    assert record.trigger == "webhook (github push)"
    assert result.failures == [], result.failures[:5]
    assert result.total >= 2000
    assert version(stack) == "v2"
    images = {c.attrs["Config"]["Image"] for c in stack.containers("backend") if c.status == "running"}
    assert images == {record.image} and sha[:12] in record.image  # tagged with the commit


def test_deploy_with_no_change_replaces_every_replica_under_load(cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, _, _ = cdc
    before = {c.id for c in stack.containers("backend")}
    with LoadLoop(stack.https + "/api/version/", threads=4, max_requests=30_000, max_seconds=300) as load:
        load.wait_for(200)
        stack.cli("deploy", "backend")
        load.wait_for(2000)
    assert load.result.failures == [], load.result.failures[:5]
    after = [c for c in stack.containers("backend") if c.status == "running"]
    assert len(after) == 2 and not before & {c.id for c in after}
    assert not [c for c in stack.containers("backend") if c.name.endswith("-old")]


def test_a_commit_that_fails_its_health_check_is_rolled_back(cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, repo, forge = cdc
    sha = repo.commit("v3-broken", broken=True)
    with LoadLoop(stack.https + "/api/version/", threads=2, max_requests=30_000, max_seconds=400) as load:
        load.wait_for(100)
        assert forge.push(sha).status_code == 200
        wait_until(lambda: record_of(stack, sha) is not None, "the deploy to fail")
    record = record_of(stack, sha)
    assert record is not None and record.result == history.ROLLED_BACK, record
    assert "unhealthy" in record.message or "stopped" in record.message
    assert load.result.failures == [], load.result.failures[:5]
    assert version(stack) == "v2"
    running = [c for c in stack.containers("backend") if c.status == "running"]
    assert len(running) == 2 and {c.attrs["Config"]["Image"] for c in running} == {record.previous}
    # The checkout went back to the deployed commit: `up` keeps serving v2.
    stack.cli("up")
    assert version(stack) == "v2"


def test_rollback_returns_to_the_previous_image_and_up_keeps_it(cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, _, _ = cdc
    stack.cli("rollback", "backend")
    assert version(stack) == "v1"
    stack.cli("up")
    assert version(stack) == "v1", "a rollback holds until the next deploy"
    listed = stack.cli("history", "--json")
    kinds = [(r["kind"], r["result"]) for r in json.loads(listed.stdout)]
    assert kinds[-1] == ("rollback", "ok") and ("deploy", "rolled back") in kinds


def test_bad_deploy_input_is_a_clear_error(cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, _, _ = cdc
    bad_ref = stack.cli("deploy", "backend", "--ref=--upload-pack=evil", check=False)
    assert bad_ref.returncode == 2 and "is not a commit id or a branch name" in bad_ref.stderr
    unknown = stack.cli("deploy", "--ref", "1234567890abcdef1234567890abcdef12345678", check=False)
    assert unknown.returncode == 2 and "is not a commit on branch master" in unknown.stderr
    assert "Traceback" not in unknown.stderr + bad_ref.stderr


def test_pushes_during_a_rollout_queue_and_the_newest_wins(cdc: tuple[Stack, Repo, Forge]) -> None:
    """Three pushes in a row: deploys never overlap, the push overtaken while queued is skipped, and the
    last commit is what serves."""
    stack, repo, forge = cdc
    before = len(records(stack))
    shas = []
    for name in ("v4", "v5", "v6"):
        shas.append(repo.commit(name))
        assert forge.push(shas[-1]).status_code == 200
        time.sleep(0.5)  # in order, but well within the first rollout
    wait_until(lambda: record_of(stack, shas[-1]) is not None, "the newest push to be deployed", timeout=400)
    assert version(stack) == "v6"
    new = records(stack)[before:]
    deployed = [r.ref for r in new]
    assert deployed == [sha for sha in shas if sha in deployed] and deployed[-1] == shas[-1]  # in push order
    assert all(r.result == history.OK for r in new)
    for earlier, later in zip(new, new[1:], strict=False):
        ended = datetime.fromisoformat(earlier.started).timestamp() + earlier.seconds
        assert ended <= datetime.fromisoformat(later.started).timestamp() + 1, "deploys overlapped"
    log = stack.containers("cdc")[0].logs()
    skipped = [sha for sha in shas if sha not in deployed]
    assert skipped, "the middle push, queued behind the first rollout, was overtaken by the last"
    for sha in skipped:
        assert f"skipping {sha}: a newer push".encode() in log
