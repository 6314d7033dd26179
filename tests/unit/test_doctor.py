"""doctor: with no engine it says so with a fix and exits 1 (no traceback); a bad spec's problems are listed;
a port that something already listens on is reported, unless it is the project's own LBC."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploystack.doctor import (
    Check,
    Engine,
    Listener,
    ca_bundle_check,
    disk_check,
    port_check,
    report_lines,
    spec_check,
)
from deploystack.engine.doctor import EngineFacts, Published
from tests.conftest import BLUEPRINTS, REPO, write_spec

NO_ENGINE = "unix:///nonexistent.sock"


def doctor(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=NO_ENGINE)
    return subprocess.run([sys.executable, "-m", "deploystack", "doctor", "-f", str(spec), *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def by_name(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in json.loads(result.stdout)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on 127.0.0.1, on a free port: what an LBC port must not collide with."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def spec_with_ports(folder: Path, http: int, https: int) -> Path:
    return write_spec(folder, f"""\
project: doctortest
lbc: {{bind: 127.0.0.1, ports: {{http: {http}, https: {https}}}}}
apc:
  apps:
    backend: {{source: apps/backend, wsgi: backend.wsgi:application}}
""")


def test_no_engine_fails_with_a_fix_and_no_traceback() -> None:
    result = doctor(BLUEPRINTS / "default" / "deploystack.yaml")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    engine = next(i for i, line in enumerate(lines) if line.split()[:2] == ["FAIL", "engine"])
    assert f"cannot reach the Docker engine at {NO_ENGINE}" in lines[engine]
    assert lines[engine + 1].lstrip().startswith("fix: start an engine as root: `dockerd &`")
    assert f"DOCKER_HOST (now {NO_ENGINE})" in lines[engine + 1]
    assert lines[-1].startswith(tuple(f"{n} failed" for n in range(1, 10)))


def test_json_output(tmp_path: Path) -> None:
    result = doctor(spec_with_ports(tmp_path, free_port(), free_port()), "--json")
    assert result.returncode == 1, result.stderr
    checks = by_name(result)
    # One check per base the spec needs: the roles' Debian 12, and Debian 13 for its 3.13 app.
    assert list(checks) == ["spec", "engine", "disk", "base image bookworm", "base image trixie", "CA bundle",
                            "lbc http port", "lbc https port", "database"]
    assert "`deploystack db upgrade` is available" in checks["database"]["detail"]  # no dbc.ha: PostgreSQL 15
    assert checks["engine"]["status"] == "FAIL" and "dockerd" in checks["engine"]["fix"]
    assert checks["spec"]["status"] == "ok"
    assert checks["lbc http port"]["status"] == checks["lbc https port"]["status"] == "ok"
    assert {c["status"] for c in checks.values()} <= {"ok", "warn", "FAIL"}


def test_bad_spec_lists_its_problems(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "project: Bad\napc:\n  apps: {}\nlbc:\n  bindd: x\n")
    result = doctor(spec, "--json")
    assert result.returncode == 1
    checks = by_name(result)
    assert checks["spec"]["status"] == "FAIL"
    assert checks["spec"]["detail"].splitlines()[1:] == [
        "project (line 1): must be lowercase letters, digits, '-' and '_', starting with a letter or digit "
        "(Compose's rule for project names), at most 48 characters",
        "apc.apps (line 3): must not be empty",
        "lbc.bindd (line 5): unknown key (did you mean 'bind'?)",
    ]
    assert "deploystack validate" in checks["spec"]["fix"]
    assert checks["ports"]["status"] == "warn"  # nothing to check them against


def test_missing_spec(tmp_path: Path) -> None:
    check, stack = spec_check(tmp_path / "nope.yaml")
    assert stack is None and check.failed and "not found (deploystack init writes one)" in check.detail


def test_a_port_in_use_is_reported(tmp_path: Path, listener: int) -> None:
    http = free_port()
    result = doctor(spec_with_ports(tmp_path, http, listener))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    https = next(i for i, line in enumerate(lines) if "lbc https port" in line)
    assert lines[https].startswith("FAIL") and f"127.0.0.1:{listener} is in use" in lines[https]
    assert f"fix: stop what listens there (`ss -ltnp 'sport = :{listener}'`" in lines[https + 1]
    assert any(line.startswith("ok") and f"127.0.0.1:{http} free" in line for line in lines)


def lbc_port(address: str, port: int) -> Listener:
    return Listener("lbc https port", address, port, "lbc", "LBC", "lbc.bind", "lbc.ports")


def test_a_port_held_by_the_projects_own_lbc_is_fine(listener: int) -> None:
    own = [Published("doctortest-lbc-1", "127.0.0.1", listener)]
    assert port_check(lbc_port("127.0.0.1", listener), own) == Check(
        "lbc https port", "ok", f"127.0.0.1:{listener} is this project's own LBC (doctortest-lbc-1)")
    elsewhere = port_check(lbc_port("127.0.0.1", listener), [Published("x-lbc-1", "127.0.0.1", 1)])
    assert elsewhere.failed and elsewhere.detail == f"127.0.0.1:{listener} is in use by another program"


def test_an_address_that_is_not_here() -> None:
    check = port_check(lbc_port("192.0.2.1", free_port()), [])  # TEST-NET-1: never a local address
    assert check.failed and "is not an address of this machine" in check.detail and "lbc.bind" in check.fix


def test_the_offsite_replicas_port_is_checked_when_one_is_declared(tmp_path: Path, listener: int) -> None:
    spec = spec_with_ports(tmp_path, free_port(), free_port())
    assert "db offsite port" not in by_name(doctor(spec, "--json"))
    spec.write_text(spec.read_text() + f"dbc:\n  offsite: {{name: dr, host: dr.example.org, bind: 127.0.0.1, "
                                       f"port: {listener}}}\n")
    check = by_name(doctor(spec, "--json"))["db offsite port"]
    assert check["status"] == "FAIL" and f"127.0.0.1:{listener} is in use" in check["detail"]
    assert check["fix"].endswith("choose another port in the spec: dbc.offsite.port")


def test_ca_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    assert ca_bundle_check(bundle).status == "warn"  # missing
    bundle.write_bytes(b"")
    empty = ca_bundle_check(bundle)
    assert empty.status == "warn" and "empty" in empty.detail and "--ca-bundle" in empty.fix
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n" * 2)
    assert ca_bundle_check(bundle) == Check("CA bundle", "ok", f"{bundle} (2 certificates)")


def test_disk(tmp_path: Path) -> None:
    local = disk_check(Engine(None, EngineFacts("unix:///run/docker.sock", "1", "1.41", str(tmp_path / "d"))))
    assert local.status in ("ok", "warn") and f"GB free in {tmp_path / 'd'}" in local.detail
    remote = disk_check(Engine(None, EngineFacts("tcp://10.0.0.5:2376", "1", "1.41", "/var/lib/docker")))
    assert remote.status == "warn" and "not on this machine" in remote.detail


def test_report_lines() -> None:
    lines = report_lines([Check("spec", "ok", "fine"), Check("engine", "FAIL", "down\nreally", "start it")])
    assert lines == ["ok    spec    fine", "FAIL  engine  down", "              really",
                     "              fix: start it", "1 failed, 0 warning(s): up would fail"]


def test_database_check_says_when_db_upgrade_applies(tmp_path: Path) -> None:
    from deploystack.doctor import database_check
    from deploystack.spec import load_stack

    spec = spec_with_ports(tmp_path, free_port(), free_port())
    old = load_stack(spec)
    check = database_check(old, ["shop_db-primary-data"])
    assert check.status == "ok" and "PostgreSQL 15" in check.detail and "`deploystack db upgrade`" in check.detail
    patroni = old.model_copy(update={"dbc": old.dbc.model_copy(update={"ha": "patroni"})})
    waiting = database_check(patroni, [f"{old.project}_db-primary-data"])
    assert waiting.status == "FAIL" and waiting.fix.startswith("deploystack db upgrade")
    assert database_check(patroni, [f"{old.project}_db-primary-data", f"{old.project}_db-node-1-data"]).status == "ok"
    assert database_check(patroni, None).status == "ok"  # no engine: nothing known of its volumes


def test_minio_warns_that_the_apps_share_its_root_key(tmp_path: Path) -> None:
    from deploystack.doctor import media_isolation_check
    from deploystack.spec import load_stack

    stack = load_stack(spec_with_ports(tmp_path, free_port(), free_port()))
    assert media_isolation_check(stack) is None  # SeaweedFS: an identity per app
    minio = stack.model_copy(update={"mmc": stack.mmc.model_copy(update={"backend": "minio"})})
    check = media_isolation_check(minio)
    assert check is not None and check.status == "warn" and "root key" in check.detail
    assert all(app in check.detail for app in stack.apc.apps)
