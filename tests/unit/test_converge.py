"""Convergence planning: what `up` does to each container, computed without Docker."""

from __future__ import annotations

from deploystack.engine.converge import (
    Action,
    NodeRoll,
    Observed,
    Wanted,
    orphans,
    plan_service,
    roll_members,
    roll_nodes,
    stop_waves,
)


def wanted(n: int, h: str = "h1", one_shot: bool = False) -> list[Wanted]:
    return [Wanted("web", i, f"p-web-{i}", h, one_shot) for i in range(1, n + 1)]


def seen(n: int, h: str = "h1", status: str = "running", exit_code: int = 0) -> list[Observed]:
    return [Observed(f"id{i}", "web", i, f"p-web-{i}", h, status, exit_code) for i in range(1, n + 1)]


def actions(steps: list) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    return [(s.action.value, s.number) for s in steps]


def test_nothing_changed_is_all_noop() -> None:
    assert actions(plan_service(wanted(2), seen(2))) == [("noop", 1), ("noop", 2)]


def test_changed_hash_recreates() -> None:
    assert actions(plan_service(wanted(2, "h2"), seen(2))) == [("recreate", 1), ("recreate", 2)]


def test_scale_up_and_down() -> None:
    assert actions(plan_service(wanted(3), seen(1))) == [("noop", 1), ("create", 2), ("create", 3)]
    assert actions(plan_service(wanted(1), seen(3))) == [("noop", 1), ("remove", 2), ("remove", 3)]


def test_stopped_container_is_started() -> None:
    assert actions(plan_service(wanted(1), seen(1, status="exited"))) == [("start", 1)]


def test_one_shot_job_done_once() -> None:
    assert actions(plan_service(wanted(1, one_shot=True), seen(1, status="exited"))) == [("noop", 1)]
    failed = seen(1, status="exited", exit_code=1)
    assert actions(plan_service(wanted(1, one_shot=True), failed)) == [("recreate", 1)]


def test_orphans_of_removed_services() -> None:
    steps = orphans({"api"}, seen(2))
    assert [(s.action, s.name) for s in steps] == [(Action.REMOVE, "p-web-1"), (Action.REMOVE, "p-web-2")]


NODES = ("db-node-1", "db-node-2", "db-node-3")


def test_patroni_nodes_roll_standbys_first_then_the_leader() -> None:
    assert roll_nodes(NODES, "db-node-2", NODES) == NodeRoll(("db-node-1", "db-node-3"), "db-node-2")


def test_a_standby_that_is_not_streaming_goes_first() -> None:
    assert roll_nodes(NODES, "db-node-1", {"db-node-1", "db-node-2"}) == NodeRoll(("db-node-3", "db-node-2"),
                                                                                  "db-node-1")


def test_only_standbys_to_replace_need_no_switchover() -> None:
    assert roll_nodes(["db-node-3"], "db-node-1", NODES) == NodeRoll(("db-node-3",), None)


def test_no_rolling_without_a_leader_or_a_standby_to_hand_over_to() -> None:
    assert roll_nodes([], "db-node-1", NODES) is None
    assert roll_nodes(NODES, None, NODES) is None
    assert roll_nodes(["db-node-1"], "db-node-1", ["db-node-1"]) is None


def test_etcd_members_roll_one_at_a_time_stopped_first() -> None:
    members = ["etcd-1", "etcd-2", "etcd-3"]
    assert roll_members(members, members, 3) == ("etcd-1", "etcd-2", "etcd-3")
    # A stopped member serves no one: it goes first, and once back it makes room for the others.
    assert roll_members(members, ["etcd-1", "etcd-3"], 3) == ("etcd-2", "etcd-1", "etcd-3")
    assert roll_members(["etcd-3"], ["etcd-1", "etcd-2", "etcd-3"], 3) == ("etcd-3",)
    assert roll_members([], members, 3) is None


def test_etcd_members_are_replaced_together_when_no_quorum_would_stay() -> None:
    # One member up of three: replacing it alone leaves none; the two stopped ones coming back first
    # would do, so that is the order.
    assert roll_members(["etcd-1", "etcd-2", "etcd-3"], ["etcd-1"], 3) == ("etcd-2", "etcd-3", "etcd-1")
    # Only the running member changes while the others are down: no quorum either way, together as before.
    assert roll_members(["etcd-1"], ["etcd-1"], 3) is None
    assert roll_members(["etcd-1"], [], 3) is None


def test_stop_waves_stop_what_depends_on_a_service_before_it() -> None:
    # The default blueprint's shape: the LBC, then the apps, then what they use, each as late as it can
    # (the worker, which nothing needs, with the replica); a replica before its primary.
    graph = {
        "db-primary": set(), "db-replica-1": {"db-primary"}, "redis": set(),
        "backend": {"db-primary", "db-replica-1", "redis", "backend-migrate"},
        "backend-worker": {"db-primary", "redis"}, "cdc-runner": set(), "cdc": {"cdc-runner"},
        "lbc": {"backend", "cdc"},
    }
    assert stop_waves(graph) == [
        ["lbc"], ["backend"], ["backend-worker", "cdc", "db-replica-1"], ["cdc-runner", "db-primary", "redis"]]


def test_stop_waves_stop_patroni_nodes_together_and_etcd_last() -> None:
    etcd = {"etcd-1", "etcd-2", "etcd-3"}
    graph = {"etcd-1": set(), "etcd-2": set(), "etcd-3": set(), "db-node-1": etcd, "db-node-2": etcd,
             "db-node-3": etcd, "db-router": {"db-node-1"}, "backend": {"db-router"}, "lbc": {"backend"}}
    assert stop_waves(graph) == [["lbc"], ["backend"], ["db-router"], ["db-node-1", "db-node-2", "db-node-3"],
                                 ["etcd-1", "etcd-2", "etcd-3"]]


def test_stop_waves_ignore_services_not_there_and_stop_a_cycle_with_what_depends_on_it() -> None:
    assert stop_waves({"backend": {"gone", "backend"}}) == [["backend"]]
    assert stop_waves({"lbc": {"a"}, "a": {"b"}, "b": {"a"}, "db": set()}) == [["a", "b", "lbc"], ["db"]]
    assert stop_waves({}) == []
