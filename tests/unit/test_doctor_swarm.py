"""doctor on a swarm manager: whether the encrypted private overlay can carry traffic between nodes, and
whether a Patroni DBC's members each have a node of their own."""

from __future__ import annotations

from pathlib import Path

from deploystack.doctor import overlay_encryption_check, patroni_placement_check
from deploystack.engine.doctor import EngineFacts
from deploystack.spec import load_stack
from tests.conftest import write_spec
from tests.unit.test_lbc import MINIMAL

LOCAL = EngineFacts("unix:///var/run/docker.sock (the local socket)", "20.10", "1.41", "/var/lib/docker", 3)
REMOTE = EngineFacts("tcp://127.0.0.1:23750 (DOCKER_HOST)", "20.10", "1.41", "/var/lib/docker", 3)
FULL = {"CONFIG_INET_ESP": "m", "CONFIG_CRYPTO_GCM": "y"}


def test_a_kernel_without_esp_is_named(tmp_path: Path) -> None:
    stack = load_stack(write_spec(tmp_path, MINIMAL))
    check = overlay_encryption_check(stack, LOCAL, {"CONFIG_CRYPTO_GCM": "y"})
    assert (check.status, check.name) == ("warn", "swarm encryption")
    assert "lacks CONFIG_INET_ESP" in check.detail and "swarm.encrypted: false" in check.fix
    assert overlay_encryption_check(stack, LOCAL, FULL).status == "ok"
    assert overlay_encryption_check(stack, LOCAL, None).status == "warn"


def test_remote_nodes_are_not_guessed_and_the_fallback_says_its_cost(tmp_path: Path) -> None:
    stack = load_stack(write_spec(tmp_path, MINIMAL))
    remote = overlay_encryption_check(stack, REMOTE, FULL)  # this kernel is not the nodes'
    assert remote.status == "warn" and "not checked on the nodes' kernels" in remote.detail
    plain = overlay_encryption_check(load_stack(write_spec(tmp_path, MINIMAL + "swarm: {encrypted: false}\n")),
                                     REMOTE, None)
    assert plain.status == "ok" and "unencrypted" in plain.detail and "swarm of 3 node(s)" in plain.detail


PATRONI = MINIMAL + "dbc: {ha: patroni, replicas: 1}\n"
MEMBER = "deploystack.db-member-{}".format


def test_patroni_members_one_per_node(tmp_path: Path) -> None:
    stack = load_stack(write_spec(tmp_path, PATRONI))
    spread = {"n1": frozenset({MEMBER(3), "deploystack.edge"}), "n2": frozenset({MEMBER(1)}),
              "n3": frozenset({MEMBER(2)})}
    check = patroni_placement_check(stack, spread)
    assert (check.name, check.status) == ("Patroni placement", "ok")
    assert "3 members on 3 nodes, one each" in check.detail


def test_fewer_nodes_than_patroni_members_are_said_with_what_a_loss_costs(tmp_path: Path) -> None:
    stack = load_stack(write_spec(tmp_path, PATRONI))
    two = {"n1": frozenset({MEMBER(1), MEMBER(3)}), "n2": frozenset({MEMBER(2)})}
    check = patroni_placement_check(stack, two)
    assert check.status == "warn" and "3 members for 2 node(s)" in check.detail
    assert ("n1 holds deploystack.db-member-1, deploystack.db-member-3: losing it loses 1 PostgreSQL node(s) and "
            "2 of the 3 etcd members (no quorum: no failover until it is back)") in check.detail
    assert "--label-add deploystack.db-member-K=true" in check.fix
    missing = patroni_placement_check(stack, {"n1": frozenset({MEMBER(1)}), "n2": frozenset({MEMBER(2)})})
    assert missing.status == "FAIL" and "no node is labelled deploystack.db-member-3" in missing.detail
    doubled = patroni_placement_check(stack, {**two, "n3": frozenset({MEMBER(2)})})
    assert "deploystack.db-member-2 is on n2, n3" in doubled.detail
