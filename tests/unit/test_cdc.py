"""The CDC split in two (plan/cdc.py) and the runner's queue (cdc/queue.py, cdc/runner.py): no Docker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploystack.cdc import queue
from deploystack.cdc.runner import Runner
from deploystack.plan.cdc import (
    EGRESS_NETWORK,
    HOOKS_NETWORK,
    QUEUE_DIR,
    QUEUE_VOLUME,
    RECEIVER,
    RECEIVER_UID,
    RUNNER,
)
from deploystack.plan.model import ProjectPlan
from deploystack.plan.project import build_plan
from deploystack.spec import load_stack
from deploystack.target import Target
from tests.conftest import write_spec

SHA = "a" * 40
SPEC = ("project: shop\ncdc: {enabled: true, branch: main}\napc:\n  apps:\n    backend:\n"
        "      source: apps/backend\n      wsgi: backend.wsgi:application\n      replicas: 2\n")


@pytest.fixture
def plan(tmp_path: Path) -> ProjectPlan:
    return build_plan(load_stack(write_spec(tmp_path, SPEC)))


def test_the_receiver_shares_a_network_with_the_lbc_only_and_holds_no_socket_nor_other_secret(
        plan: ProjectPlan) -> None:
    receiver = plan.service(RECEIVER)
    assert receiver.networks == (HOOKS_NETWORK,)
    assert sorted(s.name for s in plan.services if HOOKS_NETWORK in s.networks) == [RECEIVER, "lbc"]
    assert {n.name: n.internal for n in plan.networks}[HOOKS_NETWORK] is True
    assert [(m.source, m.target, m.bind) for m in receiver.mounts] == [(QUEUE_VOLUME, QUEUE_DIR, False)]
    secrets = [name for name, value in receiver.environment if "${" in value]
    assert secrets == ["CDC_WEBHOOK_SECRET"]  # the one reference to .env it has
    assert receiver.read_only and receiver.cap_add == () and receiver.cap_drop == ("ALL",)
    assert receiver.build is not None and not receiver.build.with_package
    assert receiver.depends_on == (RUNNER,)


def test_the_runner_holds_the_socket_and_joins_no_network_an_app_or_the_lbc_is_on(plan: ProjectPlan) -> None:
    runner = plan.service(RUNNER)
    assert runner.networks == (EGRESS_NETWORK,)
    assert [s.name for s in plan.services if EGRESS_NETWORK in s.networks] == [RUNNER]
    assert {n.name: n.internal for n in plan.networks}[EGRESS_NETWORK] is False
    targets = {m.target for m in runner.mounts}
    assert {"/var/run/docker.sock", QUEUE_DIR} <= targets
    assert "CDC_WEBHOOK_SECRET" not in dict(runner.environment)
    assert QUEUE_VOLUME in plan.volumes
    # The LBC reaches the receiver by its name, and waits for it.
    assert "lbc" in {s.name for s in plan.services} and RECEIVER in plan.service("lbc").depends_on


def test_no_cdc_no_hooks_network_and_none_on_a_swarm(tmp_path: Path) -> None:
    stack = load_stack(write_spec(tmp_path, SPEC))
    swarm = build_plan(stack, swarm=True)
    assert not {RECEIVER, RUNNER} & {s.name for s in swarm.services}
    assert swarm.service("lbc").networks == ("public", "private")
    assert not {HOOKS_NETWORK, EGRESS_NETWORK} & {n.name for n in swarm.networks}
    assert QUEUE_VOLUME not in swarm.volumes


def test_the_receivers_image_runs_as_the_user_the_plan_names() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "compose" / "cdc" / "Dockerfile").read_text()
    assert f"USER {RECEIVER_UID}:{RECEIVER_UID}" in dockerfile and "RUN apt-install webhook\n" in dockerfile


def job(delivery: str = "d-1", sha: str = SHA, ref: str = "refs/heads/main") -> str:
    return json.dumps({"delivery": delivery, "sha": sha, "ref": ref, "provider": "github", "received": "now"})


def test_a_queued_push_is_checked_again() -> None:
    push = queue.parse("1-d-1.json", job(), "main")
    assert (push.delivery, push.sha, push.provider) == ("d-1", SHA, "github")
    bad = {"not JSON": "{", "not a push": "[]", "is not one a forge sends": job(delivery="a/../b"),
           "is not a 40-hex-digit commit": job(sha="--upload-pack=x"),
           "is not refs/heads/main": job(ref="refs/heads/master")}
    for reason, text in bad.items():
        with pytest.raises(queue.BadPush, match=reason):
            queue.parse("x.json", text, "main")


def test_delivery_ids_are_remembered_and_trimmed(tmp_path: Path) -> None:
    store = queue.Deliveries(tmp_path / "deliveries", keep=3)
    assert not store.seen("a")
    for delivery in "abcdef":
        store.remember(delivery)
    assert store.seen("a") and store.seen("f")
    store.remember("g")  # six held: trimmed to the newest three, plus this one
    assert (tmp_path / "deliveries").read_text().split() == ["d", "e", "f", "g"]
    assert not store.seen("a") and queue.Deliveries(tmp_path / "deliveries").seen("g")  # on disk


def test_the_runner_refuses_replays_and_bad_files_and_lets_the_newest_win(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The runner's queue handling on real files; the deploy itself (Docker) is recorded instead."""
    incoming = tmp_path / queue.INCOMING
    incoming.mkdir()
    deployed: list[str] = []
    runner = Runner(tmp_path, Target(tmp_path / "deploystack.yaml", tmp_path / "stack"), "main")
    monkeypatch.setattr(runner, "_deploy", lambda push: deployed.append(push.delivery))
    shas = {d: d[-1] * 40 for d in ("d-1", "d-2", "d-3")}
    for n, delivery in enumerate(["d-1", "d-2"]):
        (incoming / f"{n}-{delivery}.json").write_text(job(delivery, shas[delivery]))
    (incoming / "2-x.json").write_text(job("d-x", ref="refs/heads/other"))
    (incoming / ".3-d-3.json.tmp").write_text(job("d-3"))  # still being written
    assert runner.once() and deployed == ["d-2"]
    assert [p.name for p in incoming.iterdir()] == [".3-d-3.json.tmp"]
    out = capsys.readouterr().out
    assert f"skipping {shas['d-1']}: a newer push ({shas['d-2']}) is queued" in out
    assert "refusing queued '2-x.json': 'refs/heads/other' is not refs/heads/main" in out
    (incoming / "4-d-2.json").write_text(job("d-2", shas["d-2"]))  # the same delivery again
    assert runner.once() and deployed == ["d-2"]
    assert f"refusing the push of {shas['d-2']} (delivery d-2): a replay" in capsys.readouterr().out
    assert not runner.once()
