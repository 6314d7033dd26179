"""Which engine deploystack drives: the docker CLI's order (DOCKER_HOST, DOCKER_CONTEXT, the current context,
the local socket), so that `docker stack deploy` and the SDK always talk to the same engine; and where
images for a remote swarm are built."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from docker.context import ContextAPI

from deploystack.engine.client import LOCAL_SOCKET, EngineAddress, build_engine, engine_address
from deploystack.errors import EngineError


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ~/.docker of the test's own, with a context `cluster` at tcp://10.9.8.7:2375."""
    (tmp_path / "config.json").write_text("{}")  # docker-py puts contexts beside it (else in the cwd)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    # As `docker context create cluster --docker host=tcp://10.9.8.7:2375` writes it (docker-py's own
    # create_context would write http:// or https://).
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"cluster").hexdigest() / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"Name": "cluster", "Metadata": {}, "Endpoints": {
        "docker": {"Host": "tcp://10.9.8.7:2375", "SkipTLSVerify": False}}}))
    return tmp_path


def test_docker_host_comes_first(docker_config: Path) -> None:
    address = engine_address({"DOCKER_HOST": "tcp://127.0.0.1:23750", "DOCKER_CONTEXT": "cluster"})
    assert (address.url, address.source, address.local) == ("tcp://127.0.0.1:23750", "DOCKER_HOST", False)


def test_docker_context_names_the_engine(docker_config: Path) -> None:
    address = engine_address({"DOCKER_CONTEXT": "cluster"})
    assert (address.url, address.source) == ("tcp://10.9.8.7:2375", "Docker context cluster")
    assert str(address) == "tcp://10.9.8.7:2375 (Docker context cluster)"


def test_the_current_context_of_the_config_file(docker_config: Path) -> None:
    assert engine_address({}).url == LOCAL_SOCKET
    ContextAPI.set_current_context("cluster")
    assert engine_address({}).source == "Docker context cluster"
    assert engine_address({"DOCKER_CONTEXT": "default"}).url == LOCAL_SOCKET


def test_an_unknown_context_is_named(docker_config: Path) -> None:
    with pytest.raises(EngineError, match="no Docker context nosuch"):
        engine_address({"DOCKER_CONTEXT": "nosuch"})


def test_a_remote_swarm_builds_on_this_machine(tmp_path: Path) -> None:
    remote = EngineAddress("tcp://127.0.0.1:23750", "DOCKER_HOST")
    local = EngineAddress(LOCAL_SOCKET, "the local socket")
    assert build_engine(local, {}) == local
    assert build_engine(remote, {"DEPLOYSTACK_BUILD_HOST": "tcp://10.0.0.9:2375"}).url == "tcp://10.0.0.9:2375"
    assert build_engine(remote, {}) == (local if Path("/var/run/docker.sock").exists() else remote)
