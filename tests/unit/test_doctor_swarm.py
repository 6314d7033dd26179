"""doctor on a swarm manager: whether the encrypted private overlay can carry traffic between nodes."""

from __future__ import annotations

from pathlib import Path

from deploystack.doctor import overlay_encryption_check
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
