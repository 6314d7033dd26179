"""Deploys without an engine: the history's pins and rollback targets, git checkouts from a real local
repository, which apps a deploy takes, and the webhook rule per forge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploystack import gitsource, history
from deploystack.cli import app
from deploystack.errors import StackError, UsageError
from deploystack.operations.deploys import apps_to_deploy
from deploystack.plan.project import build_plan
from deploystack.render.project import render_project
from deploystack.render.state import read_output_state
from deploystack.render.templates import render_template
from deploystack.spec import load_stack
from deploystack.spec.models import GitSource
from tests.conftest import REPO, write_spec

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def record(image: str, previous: str, result: str = history.OK, source_image: str | None = None,
           ref: str = "source", kind: str = "deploy") -> history.Deploy:
    return history.Deploy(app="backend", kind=kind, ref=ref, image=image, source_image=source_image or image,
                          previous=previous, started="2026-11-28T00:00:00+00:00", seconds=1.0, trigger="test",
                          result=result)


def test_history_round_trip_skips_a_line_cut_short(tmp_path: Path) -> None:
    history.append(tmp_path, record("app:2", "app:1"))
    with history.path(tmp_path).open("a") as handle:
        handle.write('{"app": "backend", "ki')  # a crash mid-write
    history.append(tmp_path, record("app:3", "app:2"))
    assert [r.image for r in history.read(tmp_path)] == ["app:2", "app:3"]
    assert history.read(tmp_path / "nowhere") == []


def test_a_rollback_pins_its_image_until_the_source_changes() -> None:
    records = [record("app:2", "app:1"), record("app:1", "app:2", kind="rollback", source_image="app:2")]
    assert history.pinned_image(records, "backend", "app:2") == "app:1"  # source as it was: pinned
    assert history.pinned_image(records, "backend", "app:9") is None  # source changed: it wins
    assert history.pinned_image(records[:1], "backend", "app:2") is None  # a deploy pins nothing
    assert history.pinned_image(records, "other", "app:2") is None


def test_rollback_target_skips_failed_and_identical_deploys() -> None:
    records = [record("app:2", "app:1"), record("app:2", "app:2"), record("app:3", "app:2", history.ROLLED_BACK)]
    target = history.rollback_target(records, "backend")
    assert target is not None and target.image == "app:1"  # what ran before the first deploy
    records.append(record("app:4", "app:2", ref="c4"))
    target = history.rollback_target(records, "backend")
    assert target is not None and target.image == "app:2"
    assert history.rollback_target([record("app:1", "app:1")], "backend") is None
    assert history.rollback_target([], "backend") is None


def test_recent_images_are_kept_for_rollbacks() -> None:
    records = [record(f"app:{n}", f"app:{n - 1}") for n in range(2, 7)]
    records.append(record("app:9", "app:6", history.ROLLED_BACK))
    assert history.recent_images(records, per_app=3) == {"app:6", "app:5", "app:4"}


@pytest.fixture()
def forge(tmp_path: Path) -> tuple[Path, list[str]]:
    """A bare repository with two commits on master (each with manage.py), pushed from a work tree."""
    bare, work = tmp_path / "repos" / "app.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    work.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "master"], cwd=work, check=True)
    shas = []
    for version in ("v1", "v2"):
        (work / "manage.py").write_text("# Django\n")
        (work / "VERSION").write_text(version)
        subprocess.run([*GIT, "add", "-A"], cwd=work, check=True)
        subprocess.run([*GIT, "commit", "-qm", version], cwd=work, check=True)
        subprocess.run([*GIT, "push", "-q", str(bare), "HEAD:refs/heads/master"], cwd=work, check=True)
        shas.append(subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                                   check=True).stdout.strip())
    return tmp_path, shas


def test_fetch_checks_out_the_branch_head_or_a_given_commit(forge: tuple[Path, list[str]]) -> None:
    root, (first, second) = forge
    output = root / "stack"
    source = GitSource(url="repos/app.git")
    assert gitsource.fetch("app", source, root, output, None) == second
    checkout = gitsource.checkout_dir(output, "app")
    assert (checkout / "VERSION").read_text() == "v2"
    (checkout / "stray.txt").write_text("left by a build")
    assert gitsource.fetch("app", source, root, output, first[:10]) == first
    assert (checkout / "VERSION").read_text() == "v1" and not (checkout / "stray.txt").exists()
    assert gitsource.head(output, "app") == first


def test_fetch_refuses_bad_refs_and_unknown_commits(forge: tuple[Path, list[str]]) -> None:
    root, _ = forge
    source = GitSource(url="repos/app.git")
    with pytest.raises(UsageError, match="is not a commit id or a branch name"):
        gitsource.fetch("app", source, root, root / "stack", "--upload-pack=touch /tmp/x")
    with pytest.raises(UsageError, match="is not a commit on branch master"):
        gitsource.fetch("app", source, root, root / "stack", "0" * 40)
    with pytest.raises(StackError, match="git fetch failed"):
        gitsource.fetch("app", GitSource(url="repos/missing.git"), root, root / "stack", None)


def test_a_webhook_fetch_refuses_a_commit_that_does_not_follow_the_deployed_one(
        forge: tuple[Path, list[str]]) -> None:
    """The ancestor check (git merge-base --is-ancestor) on a real repository: a later commit passes; the
    deployed commit itself, an older one (a replayed push) and one on rewritten history are refused, and
    the checkout does not move."""
    root, (first, second) = forge
    output, source = root / "stack", GitSource(url="repos/app.git")
    checkout = gitsource.checkout_dir(output, "app")
    assert gitsource.fetch("app", source, root, output, first) == first
    assert gitsource.fetch("app", source, root, output, second, descendant_of=first) == second
    for older in (first, second):
        with pytest.raises(gitsource.NotDescendant, match=f"refusing {older[:12]}: it (is not a descendant of|is the "
                                                          f"deployed commit) {second[:12]}"):
            gitsource.fetch("app", source, root, output, older, descendant_of=second)
        assert gitsource.head(output, "app") == second
    # History rewritten: a commit on top of the first, force-pushed over the second.
    work = root / "work"
    subprocess.run([*GIT, "reset", "-q", "--hard", first], cwd=work, check=True)
    (work / "VERSION").write_text("v2-rewritten")
    subprocess.run([*GIT, "commit", "-qam", "rewritten"], cwd=work, check=True)
    subprocess.run([*GIT, "push", "-qf", str(root / "repos" / "app.git"), "HEAD:refs/heads/master"], cwd=work,
                   check=True)
    rewritten = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                               check=True).stdout.strip()
    with pytest.raises(gitsource.NotDescendant, match="deploy it by hand with deploystack deploy app --ref"):
        gitsource.fetch("app", source, root, output, rewritten, descendant_of=second)
    assert gitsource.head(output, "app") == second and (checkout / "VERSION").read_text() == "v2"
    assert gitsource.fetch("app", source, root, output, rewritten) == rewritten  # by hand: any commit
    assert gitsource.is_descendant("app", checkout, rewritten, first)
    assert not gitsource.is_descendant("app", checkout, rewritten, second)
    with pytest.raises(StackError, match="git merge-base failed"):
        gitsource.is_descendant("app", checkout, rewritten, "0" * 40)


def test_urls_stay_and_paths_resolve_against_the_spec(tmp_path: Path) -> None:
    assert gitsource.resolve_url("https://example.invalid/a.git", tmp_path) == "https://example.invalid/a.git"
    assert gitsource.resolve_url("git@example.invalid:team/a.git", tmp_path) == "git@example.invalid:team/a.git"
    assert gitsource.resolve_url("repos/a.git", tmp_path) == str(tmp_path / "repos" / "a.git")


SPEC = """\
project: shop
apc:
  apps:
    backend:
      git: {url: repos/backend.git}
      wsgi: backend.wsgi:application
    frontend:
      source: apps/frontend
      wsgi: frontend.wsgi:application
"""


def test_which_apps_a_deploy_takes(spec_dir: Path) -> None:
    stack = load_stack(write_spec(spec_dir, SPEC, apps=("frontend",)))
    assert apps_to_deploy(stack, None, None) == ["backend", "frontend"]
    assert apps_to_deploy(stack, None, "abc1234") == ["backend"]
    assert apps_to_deploy(stack, "frontend", None) == ["frontend"]
    with pytest.raises(UsageError, match="app frontend is built from its folder"):
        apps_to_deploy(stack, "frontend", "abc1234")
    with pytest.raises(UsageError, match="no app 'shop'"):
        apps_to_deploy(stack, "shop", None)


@pytest.mark.parametrize(("provider", "kind", "header", "delivery"), [
    ("github", "payload-hmac-sha256", "X-Hub-Signature-256", "X-GitHub-Delivery"),
    ("gitea", "payload-hmac-sha256", "X-Gitea-Signature", "X-Gitea-Delivery"),
    ("gitlab", "value", "X-Gitlab-Token", "X-Gitlab-Webhook-UUID"),
])
def test_the_hook_checks_the_providers_signature_and_passes_delivery_sha_and_ref(
        spec_dir: Path, provider: str, kind: str, header: str, delivery: str) -> None:
    stack = load_stack(write_spec(spec_dir, f"project: shop\ncdc: {{enabled: true, provider: {provider}}}\n"
                                            "apc:\n  apps:\n    backend:\n      source: apps/backend\n"
                                            "      wsgi: backend.wsgi:application\n"))
    (hooks,) = [c for c in build_plan(stack).configs if c.path == "config/cdc/hooks.json"]
    (hook,) = json.loads(render_template(hooks.template, hooks.context))
    (rule,) = hook["trigger-rule"]["or"]
    assert rule["match"]["type"] == kind and rule["match"]["parameter"] == {"source": "header", "name": header}
    assert hook["pass-arguments-to-command"] == [{"source": "header", "name": delivery},
                                                 {"source": "payload", "name": "after"},
                                                 {"source": "payload", "name": "ref"}]
    assert hook["execute-command"] == "/usr/local/bin/cdc-enqueue"  # fixed: nothing of a payload chooses it
    assert hook["trigger-rule-mismatch-http-response-code"] == 403


def test_the_cdc_sees_an_output_folder_outside_the_spec_folder(spec_dir: Path,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    spec = write_spec(spec_dir, "project: shop\ncdc: true\napc:\n  apps:\n    backend:\n"
                                "      source: apps/backend\n      wsgi: backend.wsgi:application\n")
    stack = load_stack(spec)

    def cdc_mounts(output: Path) -> tuple[dict[str, str], dict[str, str]]:
        rendered = render_project(stack, spec, output, b"", state=read_output_state(output, stack))
        (cdc,) = [s for s in rendered.plan.services if s.name == "cdc-runner"]
        assert dict(cdc.environment)["DEPLOYSTACK_OUTPUT"] == "${DEPLOYSTACK_OUTPUT}"
        return {m.target: m.source for m in cdc.mounts}, rendered.secrets

    mounts, secrets = cdc_mounts(spec_dir / "stack")  # the default: inside the spec's folder, mounted with it
    assert secrets["DEPLOYSTACK_OUTPUT"] == str((spec_dir / "stack").resolve())
    assert mounts["${DEPLOYSTACK_PROJECT_DIR}"] == ".." and "${DEPLOYSTACK_OUTPUT}" not in mounts
    elsewhere = tmp_path_factory.mktemp("srv") / "shop"
    mounts, secrets = cdc_mounts(elsewhere)
    assert secrets["DEPLOYSTACK_OUTPUT"] == str(elsewhere.resolve())
    assert mounts["${DEPLOYSTACK_OUTPUT}"] == "."


def test_history_reads_the_output_folder_given_or_from_the_environment(
        spec_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    spec = write_spec(spec_dir, SPEC, apps=("frontend",))
    elsewhere = tmp_path_factory.mktemp("srv")
    history.append(elsewhere, record("shop/backend:b", "shop/backend:a"))
    runner = CliRunner()

    def images(*args: str, env: dict[str, str] | None = None) -> list[str]:
        result = runner.invoke(app, ["history", "--json", "-f", str(spec), *args], env=env)
        assert result.exit_code == 0, result.output
        return [r["image"] for r in json.loads(result.output)]

    assert images() == []  # stack/ beside the spec: nothing deployed there
    assert images("-o", str(elsewhere)) == ["shop/backend:b"]
    assert images(env={"DEPLOYSTACK_OUTPUT": str(elsewhere)}) == ["shop/backend:b"]


@pytest.mark.parametrize("command", [["deploy", "backend"], ["rollback"], ["db", "promote", "db-replica-1"],
                                     ["db", "restore", "dump"], ["media", "restore", "backup.tar"]])
def test_commands_that_change_a_stack_refuse_an_output_with_none(spec_dir: Path, command: list[str]) -> None:
    spec = write_spec(spec_dir, SPEC, apps=("frontend",))
    typo = spec_dir / "stakc"
    result = subprocess.run([sys.executable, "-m", "deploystack", *command, "-f", str(spec), "-o", str(typo)],
                            capture_output=True, text=True, cwd=REPO, timeout=60,
                            env=dict(os.environ, DOCKER_HOST="unix:///nonexistent.sock"))
    assert result.returncode == 2, result.stderr
    assert f"{typo}: no stack was generated here (no .env)" in result.stderr and "Traceback" not in result.stderr
    assert not typo.exists()


def test_an_output_folder_of_another_project_is_refused_and_left_as_it_was(
        spec_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    spec = write_spec(spec_dir, SPEC, apps=("frontend",))
    other = tmp_path_factory.mktemp("other")
    (other / "compose.yaml").write_text("# Generated by deploystack\nname: blog\nservices: {}\n")
    (other / ".env").write_text("POSTGRES_PASSWORD=blogs-own\n")
    for command in (["generate"], ["deploy", "frontend"]):
        result = subprocess.run([sys.executable, "-m", "deploystack", *command, "-f", str(spec)],
                                capture_output=True, text=True, cwd=REPO, timeout=60,
                                env=dict(os.environ, DEPLOYSTACK_OUTPUT=str(other),
                                         DOCKER_HOST="unix:///nonexistent.sock"))
        assert result.returncode == 2, result.stderr
        assert f"{other} holds the generated project 'blog', and this spec is project 'shop'" in result.stderr
        assert "check DEPLOYSTACK_OUTPUT" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in other.iterdir()) == [".env", "compose.yaml"]
    assert (other / ".env").read_text() == "POSTGRES_PASSWORD=blogs-own\n"
