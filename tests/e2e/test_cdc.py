"""Push to deploy, on a stack of its own: the backend comes from a bare git repository the test makes,
pushes reach the CDC's receiver through the LBC signed as GitHub signs them, its runner deploys them, and
the version the app reports (`GET /api/version/`, the repository's VERSION file) says which commit serves.
Neither half of the CDC can be reached from an app; replays and commits that do not follow the deployed
one are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import docker
import pytest
import requests

from deploystack import history
from deploystack.plan.cdc import EGRESS_NETWORK, HOOKS_NETWORK, RECEIVER_UID
from deploystack.plan.names import network_name
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
        self.commits: dict[str, str] = {}  # version -> commit

    def reset(self, version: str) -> None:
        """Rewrite history: the next commit goes on top of `version`'s (and is force-pushed)."""
        self._git("reset", "--quiet", "--hard", self.commits[version])

    def commit(self, version: str, broken: bool = False, branch: str = "master") -> str:
        (self.work / "VERSION").write_text(version + "\n")
        wsgi = self.work / "backend" / "wsgi.py"
        text = wsgi.read_text().split("\n# broken\n")[0]
        wsgi.write_text(text + ('\n# broken\nraise RuntimeError("this commit cannot serve")\n' if broken else ""))
        self._git("add", "--all")
        self._git("commit", "--quiet", "--message", version)
        self._git("push", "--quiet", "--force", str(self.bare), f"HEAD:refs/heads/{branch}")
        self.commits[version] = self._git("rev-parse", "HEAD")
        return self.commits[version]

    def _git(self, *args: str) -> str:
        return subprocess.run([*GIT, *args], cwd=self.work, check=True, capture_output=True,
                              text=True).stdout.strip()


class Forge:
    """Sends push events to the stack's hook the way GitHub does."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.secret = read_env(stack.under_test.target.output / ".env")["CDC_WEBHOOK_SECRET"]

    def push(self, sha: str, branch: str = "master", signature: str | None = "good",
             delivery: str | None = None) -> requests.Response:
        """`delivery`: the X-GitHub-Delivery id (a new one by default, as for every event GitHub sends)."""
        body = json.dumps({"ref": f"refs/heads/{branch}", "after": sha, "pusher": {"name": "tests"}}).encode()
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
                   "X-GitHub-Delivery": delivery or str(uuid.uuid4())}
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


def backend_ids(stack: Stack) -> set[str]:
    return {c.id for c in stack.containers("backend") if c.status == "running"}


def more_records_than(stack: Stack, count: int) -> Callable[[], bool]:
    return lambda: len(records(stack)) > count


def runner_log_has(stack: Stack, text: str) -> Callable[[], bool]:
    return lambda: text.encode() in stack.containers("cdc-runner")[0].logs(tail=200)


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
    log = stack.containers("cdc-runner")[0].logs()
    skipped = [sha for sha in shas if sha not in deployed]
    assert skipped, "the middle push, queued behind the first rollout, was overtaken by the last"
    for sha in skipped:
        assert f"skipping {sha}: a newer push".encode() in log


# An app replica's attempts to open TCP connections: "ok", or why not.
CONNECT = """
import json, socket, sys
out = {}
for target in json.loads(sys.argv[1]):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        out[target] = "ok"
    except OSError as exc:
        out[target] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_an_app_replica_cannot_open_a_connection_to_the_receiver_or_the_runner(
        cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, _, _ = cdc
    receiver, runner = stack.containers("cdc")[0], stack.containers("cdc-runner")[0]
    addresses = [network["IPAddress"] for container in (receiver, runner)
                 for network in container.attrs["NetworkSettings"]["Networks"].values()]
    assert len(addresses) == 2 and all(addresses)
    targets = ["cdc:9000", "cdc-runner:9000", *(f"{address}:9000" for address in addresses)]
    app = next(c for c in stack.containers("backend") if c.status == "running")
    code, out = app.exec_run(["python", "-c", CONNECT, json.dumps([*targets, "lbc:80"])])
    assert code == 0, out
    tried = json.loads(out)
    assert tried.pop("lbc:80") == "ok", "the probe itself works: the app reaches the LBC"
    assert set(tried) == set(targets)
    assert all(result != "ok" for result in tried.values()), tried


def test_the_receiver_holds_no_socket_no_other_secret_and_is_not_root(cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, _, forge = cdc
    receiver, runner = stack.containers("cdc")[0], stack.containers("cdc-runner")[0]
    attrs = receiver.attrs
    assert not [m for m in attrs["Mounts"] if "docker.sock" in (m.get("Source", "") + m["Destination"])]
    user = attrs["Config"]["User"]
    assert user.split(":")[0] == str(RECEIVER_UID), user
    assert receiver.exec_run(["id", "-u"]).output.decode().strip() == str(RECEIVER_UID)
    assert attrs["HostConfig"]["ReadonlyRootfs"] and not attrs["HostConfig"]["CapAdd"]
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
    # Of the generated secrets, only the webhook's is in its environment.
    secrets = read_env(stack.under_test.target.output / ".env")
    values = {entry.split("=", 1)[1] for entry in attrs["Config"]["Env"]}
    assert [name for name, value in secrets.items() if value in values] == ["CDC_WEBHOOK_SECRET"]
    assert forge.secret in values
    # Networks: the receiver with the LBC only; the runner alone on egress, with the socket.
    assert set(attrs["NetworkSettings"]["Networks"]) == {network_name(stack.project, HOOKS_NETWORK)}
    assert set(runner.attrs["NetworkSettings"]["Networks"]) == {network_name(stack.project, EGRESS_NETWORK)}
    hooks = stack.docker.networks.get(network_name(stack.project, HOOKS_NETWORK))
    assert hooks.attrs["Internal"]
    on_hooks = {c.labels["com.docker.compose.service"] for c in stack.containers()
                if network_name(stack.project, HOOKS_NETWORK) in c.attrs["NetworkSettings"]["Networks"]}
    assert on_hooks == {"cdc", "lbc"}
    assert [m for m in runner.attrs["Mounts"] if m["Destination"] == "/var/run/docker.sock"]


def test_a_replayed_push_is_refused_and_deploys_nothing(cdc: tuple[Stack, Repo, Forge]) -> None:
    stack, repo, forge = cdc
    sha = repo.commit("v7")
    delivery = f"replay-{uuid.uuid4()}"
    assert forge.push(sha, delivery=delivery).status_code == 200
    wait_until(lambda: record_of(stack, sha) is not None, "the push to be deployed")
    before, running = len(records(stack)), backend_ids(stack)
    assert forge.push(sha, delivery=delivery).status_code == 200  # the same request, sent again
    wait_until(runner_log_has(stack, f"refusing the push of {sha} (delivery {delivery}): a replay"),
               "the replay to be refused", 30)
    time.sleep(2)  # the runner has moved on: nothing follows the refusal
    assert len(records(stack)) == before and backend_ids(stack) == running
    assert version(stack) == "v7"


def test_a_commit_that_does_not_follow_the_deployed_one_is_refused_and_deploys_nothing(
        cdc: tuple[Stack, Repo, Forge]) -> None:
    """An old push replayed under a new delivery id (ids are not signed), and history rewritten by a force
    push: both refused, recorded as such, nothing replaced. By hand, `deploy --ref` still deploys it."""
    stack, repo, forge = cdc
    running = backend_ids(stack)
    repo.reset("v2")
    rewritten = repo.commit("v2-rewritten")
    for sha in (repo.commits["v1"], rewritten):
        before = len(records(stack))
        assert forge.push(sha).status_code == 200
        wait_until(more_records_than(stack, before), "the push to be refused", 120)
        (record,) = records(stack)[before:]
        assert (record.ref, record.result) == (sha, history.REFUSED), record
        assert f"is not a descendant of {repo.commits['v7'][:12]}" in record.message
        assert record.trigger == "webhook (github push)"
        wait_until(runner_log_has(stack, f"refused {sha}, nothing deployed"), "the refusal in the log", 30)
        assert version(stack) == "v7" and backend_ids(stack) == running
    stack.cli("deploy", "backend", "--ref", rewritten)
    assert version(stack) == "v2-rewritten"
