"""export swarm: a golden stack file per blueprint, the Compose schema, what the stack file promises
(overlay networks, start-first app updates, placement, Swarm configs and secrets), the LBC's DNS-based
nginx.conf, the spec's swarm settings and lib.sh's secrets-from-files step."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from deploystack.errors import SpecError, UsageError
from deploystack.operations import Session, Target
from deploystack.operations.swarm import export_swarm
from deploystack.render.swarm import not_carried_over, registry_image, swarm_value
from deploystack.resources import compose_root
from deploystack.spec import load_stack
from tests.conftest import BLUEPRINTS, write_spec
from tests.unit.test_lbc import MINIMAL
from tests.unit.test_render import BLUEPRINT_SPECS, COMPOSE_SCHEMA, GOLDEN, empty_ca


def normalized(text: str) -> str:
    """Image tags and config/secret names carry content hashes (secrets' differ every run)."""
    text = re.sub(r"(image: [\w./-]+):[0-9a-f]{12}", r"\1:<content-hash>", text)
    return re.sub(r"\b([\w.-]+)-[0-9a-f]{10}\b", r"\1-<content-hash>", text)


def export_copy(spec: Path, tmp_path: Path, stack_file: Path | None = None) -> tuple[Path, dict[str, Any]]:
    copy = tmp_path / spec.parent.name
    shutil.copytree(spec.parent, copy, ignore=shutil.ignore_patterns("staticfiles", "db.sqlite3", "__pycache__",
                                                                       "stack", ".deploystack"))
    exported = export_swarm(Session(Target(copy / spec.name, copy / "stack"), ca_bundle=empty_ca(tmp_path)), stack_file)
    return exported.stack_file, YAML(typ="safe").load(exported.stack_yaml)


@pytest.fixture
def default_stack(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    return export_copy(BLUEPRINTS / "default" / "deploystack.yaml", tmp_path)


@pytest.mark.parametrize("spec", BLUEPRINT_SPECS, ids=lambda p: p.parent.name)
def test_golden_stack_file(spec: Path, tmp_path: Path) -> None:
    stack_file, _ = export_copy(spec, tmp_path)
    text = normalized(stack_file.read_text())
    golden = GOLDEN / f"{spec.parent.name}.swarm.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "run UPDATE_GOLDEN=1 pytest tests/unit/test_swarm.py after a deliberate change"


def test_stack_file_is_valid_against_the_compose_specification(default_stack: tuple[Path, dict[str, Any]]) -> None:
    import json

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.validate(default_stack[1], schema)


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker command-line client")
def test_the_docker_cli_reads_the_stack_file_as_stack_deploy_would(default_stack: tuple[Path, dict[str, Any]]) -> None:
    """`docker stack config` parses, interpolates and checks the file without an engine."""
    stack_file = default_stack[0]
    result = subprocess.run(["docker", "stack", "config", "-c", str(stack_file)], capture_output=True, text=True,
                            timeout=60, cwd=stack_file.parent)
    assert result.returncode == 0, result.stderr
    merged = YAML(typ="safe").load(result.stdout)
    assert merged["services"]["backend"]["environment"]["DB_PASSWORD"] == "${DB_PASSWORD_BACKEND}"
    assert merged["services"]["lbc"]["ports"][0]["mode"] == "host"


def test_networks_are_overlays_and_the_private_one_is_internal_and_encrypted(
        default_stack: tuple[Path, dict[str, Any]]) -> None:
    networks = default_stack[1]["networks"]
    assert networks["public"] == {"driver": "overlay"}
    assert networks["private"] == {"driver": "overlay", "internal": True, "driver_opts": {"encrypted": "true"}}


def test_apps_update_start_first_and_roll_back(default_stack: tuple[Path, dict[str, Any]]) -> None:
    services = default_stack[1]["services"]
    backend = services["backend"]["deploy"]
    assert backend["replicas"] == 2
    assert backend["update_config"]["order"] == "start-first"
    assert backend["update_config"]["failure_action"] == "rollback"
    assert backend["restart_policy"]["condition"] == "any"
    # Stateful services and the LBC (host ports) must not run twice at once.
    for name in ("db-primary", "redis", "lbc"):
        assert services[name]["deploy"]["update_config"]["order"] == "stop-first"
    assert services["backend-migrate"]["deploy"]["restart_policy"]["condition"] == "on-failure"
    assert services["redis"]["deploy"]["resources"]["limits"]["memory"] == "384m"
    # A stopping app task serves on until the LBC's DNS answer (valid 2 s) no longer lists it.
    assert services["backend"]["environment"]["APP_STOP_DELAY"] == "3"
    assert "APP_STOP_DELAY" not in services["backend-worker"]["environment"]


def test_placement_by_node_label_and_the_lbc_on_edge_nodes_publishing_on_the_host(
        default_stack: tuple[Path, dict[str, Any]]) -> None:
    services = default_stack[1]["services"]

    def constraints(name: str) -> list[str]:
        return list(services[name]["deploy"].get("placement", {}).get("constraints", []))

    assert constraints("db-primary") == ["node.labels.deploystack.db-primary == true"]
    assert constraints("db-replica-1") == ["node.labels.deploystack.db-replica == true"]
    assert constraints("media") == ["node.labels.deploystack.data == true"]
    assert constraints("lbc") == ["node.labels.deploystack.edge == true"]
    assert constraints("backend") == []
    for app in ("backend", "frontend", "bff"):  # replicas over as many nodes as there are
        assert services[app]["deploy"]["placement"]["preferences"] == [{"spread": "node.id"}]
    assert "preferences" not in services["db-primary"]["deploy"]["placement"]
    assert services["lbc"]["deploy"]["mode"] == "global"
    assert {p["mode"] for p in services["lbc"]["ports"]} == {"host"}
    assert "cdc" not in services, "the CDC drives one engine through its socket: not on a swarm"
    assert {s["deploy"]["endpoint_mode"] for s in services.values()} == {"dnsrr"}


def test_configs_and_secrets_are_swarm_objects_named_by_content(default_stack: tuple[Path, dict[str, Any]]) -> None:
    stack_file, data = default_stack
    lbc = data["services"]["lbc"]
    assert {c["target"] for c in lbc["configs"]} == {"/etc/deploystack/nginx.conf", "/etc/deploystack/jail.local"}
    for config in data["configs"].values():
        assert (stack_file.parent / config["file"]).is_file()
    secret_files = [stack_file.parent / s["file"] for s in data["secrets"].values()]
    assert all(f.is_file() and f.stat().st_mode & 0o777 == 0o600 for f in secret_files)
    env = (stack_file.parent.parent / ".env").read_text()
    assert f"DB_PASSWORD_BACKEND={(stack_file.parent / 'secrets/DB_PASSWORD_BACKEND').read_text()}\n" in env
    backend = data["services"]["backend"]
    assert {s["target"] for s in backend["secrets"]} >= {"DB_PASSWORD_BACKEND", "DJANGO_SECRET_KEY_BACKEND"}
    assert backend["environment"]["DB_PASSWORD"] == "$${DB_PASSWORD_BACKEND}"  # filled by lib.sh in the container
    assert backend["environment"]["DJANGO_SECRET_KEY"] == "$${DJANGO_SECRET_KEY_BACKEND}"
    assert "CDC_WEBHOOK_SECRET" not in (stack_file.parent / "stack.yaml").read_text()
    assert "secrets" not in lbc


def test_a_stack_file_elsewhere_names_its_files_relative_to_itself(tmp_path: Path) -> None:
    target = tmp_path / "deploy" / "demo.yaml"
    stack_file, data = export_copy(BLUEPRINTS / "default" / "deploystack.yaml", tmp_path, target)
    assert stack_file == target
    for item in [*data["configs"].values(), *data["secrets"].values()]:
        assert item["file"].startswith("../default/stack/swarm/")
        assert (target.parent / item["file"]).is_file()


def test_the_lbc_finds_apps_through_dns_on_a_swarm(tmp_path: Path, default_stack: tuple[Path, dict[str, Any]]) -> None:
    swarm_conf = (default_stack[0].parent / "config" / "lbc" / "nginx.conf").read_text()
    assert "upstream backend" not in swarm_conf
    assert "set $tasks_backend tasks.backend:8000;" in swarm_conf
    assert "proxy_pass http://$tasks_backend;" in swarm_conf
    assert "resolver 127.0.0.11 valid=2s" in swarm_conf
    assert "/_cdc/" not in swarm_conf
    compose_conf = (default_stack[0].parent.parent / "config" / "lbc" / "nginx.conf").read_text()
    assert "upstream backend {" in compose_conf and "tasks." not in compose_conf


def test_the_labels_a_stack_places_by(default_stack: tuple[Path, dict[str, Any]]) -> None:
    from deploystack.engine.swarm import labels_used

    assert labels_used(default_stack[1]) == {"deploystack.db-primary", "deploystack.db-replica", "deploystack.data",
                                             "deploystack.edge"}
    small = {"services": {"backend": {"deploy": {}}, "lbc": {"deploy": {"placement": {
        "constraints": ["node.labels.deploystack.edge == true"]}}}}}
    assert labels_used(small) == {"deploystack.edge"}


def test_values_keep_literal_dollars_and_escape_secret_references() -> None:
    assert swarm_value("redis://:${REDIS_PASSWORD}@redis:6379/0") == "redis://:$${REDIS_PASSWORD}@redis:6379/0"
    assert swarm_value("pa$$word") == "pa$$word"  # the plan's escape of a user's literal `$`
    assert swarm_value("$$${X}") == "$$$${X}"


def test_registry_names_the_images(tmp_path: Path) -> None:
    assert registry_image("deploystack/db:abc", None) == "deploystack/db:abc"
    assert registry_image("shop/backend:abc", "registry.example.com:5000/team") == \
        "registry.example.com:5000/team/shop/backend:abc"
    spec = write_spec(tmp_path, MINIMAL + "swarm:\n  registry: registry.example.com:5000\n  endpoint_mode: vip\n")
    exported = export_swarm(Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)))
    data = YAML(typ="safe").load(exported.stack_yaml)
    assert data["services"]["backend"]["image"].startswith("registry.example.com:5000/shop/backend:")
    assert data["services"]["backend"]["deploy"]["endpoint_mode"] == "vip"


def test_an_unencrypted_private_network_is_a_choice_said_aloud(tmp_path: Path) -> None:
    """Kernels without ESP or AES-GCM carry no traffic on an encrypted overlay (docs/swarm.md)."""
    spec = write_spec(tmp_path, MINIMAL + "swarm:\n  encrypted: false\n")
    exported = export_swarm(Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)))
    assert YAML(typ="safe").load(exported.stack_yaml)["networks"]["private"] == {"driver": "overlay", "internal": True}
    assert any("swarm.encrypted is false" in note for note in not_carried_over(load_stack(spec), exported.plan))
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, MINIMAL + "swarm:\n  encrypted: maybe\n"))
    assert str(caught.value.problems[0]).startswith("swarm.encrypted (line 9)")


@pytest.mark.parametrize(("extra", "message"), [
    ("swarm:\n  endpoint_mode: ingress\n",
     "swarm.endpoint_mode (line 9): must be one of 'dnsrr' or 'vip' (got 'ingress')"),
    ("swarm:\n  registry: https://registry.example.com\n", "swarm.registry (line 9): has the wrong form"),
    ("swarm:\n  update_delay: 1\n", "swarm.update_delay (line 9): must be ≥ 3 (got 1)"),
])
def test_bad_swarm_settings(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(tmp_path, MINIMAL + extra))
    assert [str(p) for p in caught.value.problems][0].startswith(message)


def test_tls_files_is_refused_on_a_swarm_and_nothing_is_written(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL + "lbc:\n  tls: files\n  cert_file: tls/cert.pem\n  key_file: tls/key.pem\n")
    with pytest.raises(UsageError, match="lbc.tls: files is not supported with --engine swarm"):
        export_swarm(Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)))
    written = [p for p in (tmp_path / "stack").rglob("*") if p.is_file() and ".deploystack" not in p.parts]
    assert written == []


def test_export_swarm_cli(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL)
    out = tmp_path / "elsewhere.yaml"
    result = subprocess.run([sys.executable, "-m", "deploystack", "export", "swarm", "-f", str(spec), "-o", str(out),
                             "--ca-bundle", str(empty_ca(tmp_path))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    assert "backend" in YAML(typ="safe").load(out.read_text())["services"]
    bad = write_spec(tmp_path, MINIMAL + "swarm:\n  endpoint_mode: ingress\n")
    result = subprocess.run([sys.executable, "-m", "deploystack", "export", "swarm", "-f", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "swarm.endpoint_mode (line 9)" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_compose_output_does_not_change_for_a_swarm_export(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL)
    before = Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)).rendered.files["compose.yaml"].data
    export_swarm(Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)))
    assert (tmp_path / "stack" / "compose.yaml").read_bytes() == before


def run_lib(env: dict[str, str], secrets_dir: Path | None, script: str) -> str:
    lib = compose_root() / "_sourced" / "lib.sh"
    full = {"PATH": os.environ["PATH"], **env}
    if secrets_dir is not None:
        full["DEPLOYSTACK_SECRETS_DIR"] = str(secrets_dir)
    result = subprocess.run(["bash", "-c", f"set -o errexit -o nounset; source {lib}; {script}"], env=full,
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def test_lib_sh_exports_secret_files_and_fills_references(tmp_path: Path) -> None:
    (tmp_path / "POSTGRES_PASSWORD").write_text("s3cret\n")
    (tmp_path / "REDIS_PASSWORD").write_text("r3dis")
    env = {"DB_PASSWORD": "${POSTGRES_PASSWORD}", "REDIS_URL": "redis://:${REDIS_PASSWORD}@redis:6379/0",
           "REDIS_PASSWORD": "from-env", "OTHER": "a$b${UNKNOWN}"}
    out = run_lib(env, tmp_path, 'printf "%s|%s|%s|%s|%s" "$DB_PASSWORD" "$REDIS_URL" "$POSTGRES_PASSWORD" '
                                 '"$REDIS_PASSWORD" "$OTHER"')
    # A variable the environment already has wins over the file; references take the file's value.
    assert out == "s3cret|redis://:r3dis@redis:6379/0|s3cret|from-env|a$b${UNKNOWN}"


def test_lib_sh_changes_nothing_without_secret_files(tmp_path: Path) -> None:
    out = run_lib({"DB_PASSWORD": "${POSTGRES_PASSWORD}"}, tmp_path / "absent", 'printf "%s" "$DB_PASSWORD"')
    assert out == "${POSTGRES_PASSWORD}"


def patroni_export(tmp_path: Path, replicas: int) -> tuple[dict[str, Any], list[str]]:
    spec = write_spec(tmp_path, MINIMAL + f"dbc:\n  ha: patroni\n  replicas: {replicas}\n  synchronous: true\n")
    exported = export_swarm(Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)))
    return YAML(typ="safe").load(exported.stack_yaml)["services"], not_carried_over(load_stack(spec), exported.plan)


def placement(service: dict[str, Any]) -> list[str]:
    return list(service["deploy"].get("placement", {}).get("constraints", []))


def test_patroni_members_each_have_a_node_of_their_own_and_the_router_runs_anywhere(tmp_path: Path) -> None:
    """etcd-K and db-node-K share place K (a node label): a lost node takes one etcd member and one node."""
    services, notes = patroni_export(tmp_path, replicas=1)
    member = "node.labels.deploystack.db-member-{} == true".format
    assert {name: placement(services[name]) for name in ("etcd-1", "etcd-2", "etcd-3", "db-node-1", "db-node-2")} \
        == {"etcd-1": [member(1)], "etcd-2": [member(2)], "etcd-3": [member(3)],
            "db-node-1": [member(1)], "db-node-2": [member(2)]}
    assert placement(services["db-router"]) == []
    assert not any("db-replica" in c or "db-primary" in c for s in services.values() for c in placement(s))
    # Peers and clients by service name (a task that moves has a new address, never a new name), and
    # each member one task: a DNS name for one address.
    env = services["etcd-2"]["environment"]
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == "http://etcd-2:2380"
    assert env["ETCD_INITIAL_CLUSTER"] == "etcd-1=http://etcd-1:2380,etcd-2=http://etcd-2:2380,etcd-3=http://etcd-3:2380"
    for name in ("etcd-1", "db-node-1", "db-router"):
        assert services[name]["deploy"]["replicas"] == (2 if name == "db-router" else 1)
        assert services[name]["deploy"]["endpoint_mode"] == "dnsrr"
        assert services[name]["deploy"]["update_config"]["order"] == "stop-first"
    # The router: two, spread over nodes, so that losing the node of one leaves the other answering.
    assert services["db-router"]["deploy"]["placement"]["preferences"] == [{"spread": "node.id"}]
    # A swarm's DNS names only healthy tasks: an etcd member is healthy once it runs, before a quorum.
    assert services["etcd-1"]["healthcheck"]["test"] == ["CMD", "etcd-health", "--answers"]
    assert services["db-node-1"]["healthcheck"]["test"] == ["CMD", "patroni-health"]
    # ... and restarts an unhealthy task: the router's check must not need a leader there.
    assert services["db-router"]["healthcheck"]["test"] == ["CMD", "db-router-health", "--answers"]
    (labels,) = [n for n in notes if n.startswith("services are placed by node label")]
    assert "deploystack.db-member-1, deploystack.db-member-2, deploystack.db-member-3" in labels
    (patroni_note,) = [n for n in notes if n.startswith("dbc.ha patroni")]
    assert "(3 nodes)" in patroni_note and "two etcd members" in patroni_note


def test_etcd_is_on_an_encrypted_internal_overlay_of_its_own_with_the_nodes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL + "dbc:\n  ha: patroni\n  replicas: 1\n")
    data = YAML(typ="safe").load(export_swarm(Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path))).stack_yaml)
    assert data["networks"]["dcs"] == data["networks"]["private"] == {
        "driver": "overlay", "internal": True, "driver_opts": {"encrypted": "true"}}
    services = data["services"]
    assert {name for name, s in services.items() if "dcs" in s["networks"]} == {
        "etcd-1", "etcd-2", "etcd-3", "db-node-1", "db-node-2"}
    assert services["etcd-1"]["networks"] == {"dcs": {}}
    assert services["db-node-1"]["networks"] == {"private": {}, "dcs": {}}


def test_more_patroni_nodes_than_etcd_members_need_more_places(tmp_path: Path) -> None:
    services, notes = patroni_export(tmp_path, replicas=3)
    assert placement(services["db-node-4"]) == ["node.labels.deploystack.db-member-4 == true"]
    assert "etcd-4" not in services
    assert any("deploystack.db-member-4" in n and "(4 nodes)" in n for n in notes)


def test_up_checks_every_member_label(tmp_path: Path) -> None:
    from deploystack.engine.swarm import labels_used

    services, _ = patroni_export(tmp_path, replicas=1)
    assert labels_used({"services": services}) == {
        "deploystack.edge", "deploystack.data",  # the media store and the cache
        "deploystack.db-member-1", "deploystack.db-member-2", "deploystack.db-member-3"}


def test_backups_are_refused_on_a_swarm_before_anything_is_written(tmp_path: Path) -> None:
    """pgBackRest's TLS files are not Swarm configs yet: archiving would fail on every WAL segment there."""
    spec = write_spec(tmp_path, MINIMAL + "dbc:\n  ha: patroni\n  replicas: 1\n  backups: {full: daily}\n")
    with pytest.raises(UsageError, match=r"^dbc.backups does not run on a swarm yet"):
        export_swarm(Session(Target.of(spec, None), ca_bundle=empty_ca(tmp_path)))
    written = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "stack").rglob("*") if p.is_file()]
    assert written == ["stack/.deploystack/lock"]  # the command's lock only
