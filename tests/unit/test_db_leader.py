"""Which containers `db restore` waits for: the leader's standbys, on streaming replicas and on Patroni."""

from __future__ import annotations

from deploystack.engine.db import standbys


def test_streaming_replicas_follow_db_primary() -> None:
    assert standbys(["db-primary", "db-replica-2", "db-replica-1"], "db-primary") == ["db-replica-1", "db-replica-2"]


def test_on_patroni_the_other_nodes_follow_the_leader_and_the_router_is_none() -> None:
    services = ["db-node-1", "db-node-2", "db-node-3", "db-router"]
    assert standbys(services, "db-node-2") == ["db-node-1", "db-node-3"]
