"""On a swarm the apps' database roles are made by a one-shot service over TCP (engine/provision.py), not by
`docker exec` on the primary: what the stack file gives the primary for that (on a swarm only), where the job
connects, and its shell script run against a stand-in psql (no Docker)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from deploystack.engine.provision import job_script, swarm_target
from deploystack.operations import Session, Target
from deploystack.operations.swarm import export_swarm
from deploystack.plan import build_plan
from deploystack.spec import load_stack
from tests.conftest import write_spec
from tests.unit.test_lbc import MINIMAL
from tests.unit.test_patroni import stack_of
from tests.unit.test_render import empty_ca

SUPERUSER_LINE = "host    all          postgres             all      scram-sha-256"
REJECT_LINE = "host    all          all                  all      reject"


def test_only_the_swarm_primary_takes_the_superuser_over_tcp_with_a_password(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL)
    compose = Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)).rendered
    exported = export_swarm(Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)))
    compose_hba = compose.files["config/db/pg_hba.conf"].data.decode()
    swarm_hba = (exported.folder / "config" / "db" / "pg_hba.conf").read_text()
    assert "postgres" not in compose_hba.replace("local   all          postgres", "")
    assert SUPERUSER_LINE in swarm_hba
    assert swarm_hba.index(SUPERUSER_LINE) < swarm_hba.index(REJECT_LINE)

    primary = YAML(typ="safe").load(exported.stack_yaml)["services"]["db-primary"]
    assert primary["environment"]["SUPERUSER_PASSWORD"] == "$${DB_SUPERUSER_PASSWORD}"  # lib.sh fills it
    assert "DB_SUPERUSER_PASSWORD" in {s["target"] for s in primary["secrets"]}
    assert "SUPERUSER_PASSWORD" not in (tmp_path / "stack" / "compose.yaml").read_text()
    assert "DB_SUPERUSER_PASSWORD=" in (tmp_path / "stack" / ".env").read_text()


def test_the_job_connects_to_the_primary_or_with_patroni_to_the_router(tmp_path: Path) -> None:
    plain = build_plan(load_stack(write_spec(tmp_path, MINIMAL)), swarm=True)
    assert swarm_target(plain) == ("db-primary", 5432, "db-primary")
    patroni = build_plan(stack_of(tmp_path), swarm=True)
    assert swarm_target(patroni) == ("db-router", 5432, "db-node-1")  # the router's write port: the leader


def fake_tools(folder: Path, psql_codes: list[int]) -> Path:
    """A PATH with a psql that records its arguments, password and input, then exits with the next code."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (folder / "codes").write_text("\n".join(map(str, psql_codes)) + "\n")
    scripts = {
        "psql": f"""#!/bin/sh
echo "ARGS $*" >>{folder}/calls
echo "PGPASSWORD $PGPASSWORD" >>{folder}/calls
cat >>{folder}/calls
code=$(head -n1 {folder}/codes); sed -i 1d {folder}/codes
exit "$code"
""",
        "sleep": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return bin_dir


def run_job(tmp_path: Path, psql_codes: list[int]) -> tuple[int, str]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DB_SUPERUSER_PASSWORD").write_text("su-secret")
    (secrets / "DB_PASSWORD_BACKEND").write_text("app-secret")
    script = job_script("db-primary", 5432).replace("/run/secrets/", f"{secrets}/")
    bin_dir = fake_tools(tmp_path, psql_codes)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DEPLOYSTACK_PROVISION_SQL": "\\getenv pw DB_PASSWORD_BACKEND"}
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    return result.returncode, (tmp_path / "calls").read_text()


def test_the_job_retries_while_it_gets_no_session_and_passes_secrets_as_variables_only(tmp_path: Path) -> None:
    code, calls = run_job(tmp_path, [2, 2, 0])
    assert code == 0
    assert calls.count("ARGS ") == 3
    assert "ARGS -X -q -v ON_ERROR_STOP=1 -h db-primary -p 5432 -U postgres -d postgres" in calls
    assert "PGPASSWORD su-secret" in calls
    assert "\\getenv pw DB_PASSWORD_BACKEND" in calls  # the script on stdin
    assert "secret" not in " ".join(line for line in calls.splitlines() if line.startswith("ARGS"))


def test_the_job_stops_at_an_sql_error(tmp_path: Path) -> None:
    code, calls = run_job(tmp_path, [3, 0])
    assert code == 3 and calls.count("ARGS ") == 1


def test_a_job_removed_while_the_stack_is_read_is_skipped_not_an_error() -> None:
    """The provisioning job carries the stack's label and is removed once it completed: a convergence
    check that lists the services just before must not fail on it (found by tests/swarm beside e2e)."""
    from types import SimpleNamespace
    from typing import Any

    import docker.errors

    from deploystack.engine.swarm import NAMESPACE, stack_states

    def service(name: str) -> Any:
        spec = {"Labels": {NAMESPACE: "p"}, "Mode": {"Replicated": {"Replicas": 1}}}
        return SimpleNamespace(id=name, name=f"p_{name}", attrs={"Spec": spec})

    def tasks(filters: dict[str, str]) -> list[dict[str, Any]]:
        if filters["service"] == "db-provision":
            raise docker.errors.NotFound("service db-provision not found")
        return [{"Slot": 1, "DesiredState": "running", "CreatedAt": "2026-12-02T00:00:00Z",
                 "Status": {"State": "running"}}]

    client: Any = SimpleNamespace(services=SimpleNamespace(list=lambda filters: [service("web"),
                                                                                 service("db-provision")]),
                                  api=SimpleNamespace(tasks=tasks))
    states = stack_states(client, "p", "2026-12-02T00:00:00Z")
    assert [(s.name, s.done) for s in states] == [("web", True)]
