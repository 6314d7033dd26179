"""The CLI's conventions, run as a user runs them: --version, completion, -f/-o before the command and
from the environment, `logs -f`, help texts that name only options that exist, bad paths as one line with
exit 2, and an import set that keeps --help and validate fast."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from deploystack import console, history
from deploystack.cli import app
from deploystack.cli.options import OUTPUT_ENV
from deploystack.plan.cdc import OUTPUT_PATH
from tests.conftest import REPO, write_spec
from tests.unit.test_deploys import record

SPEC = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
      routes: [/]
"""
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent.sock"}


def cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEPLOYSTACK_FILE", OUTPUT_ENV)}
    return subprocess.run([sys.executable, "-m", "deploystack", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env={**clean, **NO_ENGINE, **(env or {})})


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return write_spec(folder, SPEC)


def test_version_is_the_installed_one() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"deploystack {version('deploystack')}\n"


def test_shell_completion_is_offered_and_completes() -> None:
    assert {"--install-completion", "--show-completion"} <= set(cli("--help").stdout.split())
    script = Path(sys.executable).parent / "deploystack"
    # run from bash (`; true` keeps bash as the parent process): the shell is detected from the parent
    shown = subprocess.run(["bash", "-c", f"{script} --show-completion; true"], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and "_DEPLOYSTACK_COMPLETE=complete_bash" in shown.stdout
    completed = subprocess.run([script], capture_output=True, text=True, timeout=60, env={
        **os.environ, "_DEPLOYSTACK_COMPLETE": "complete_bash", "COMP_WORDS": "deploystack db ", "COMP_CWORD": "2"})
    assert completed.stdout.split() == ["status", "backup", "restore", "backups", "verify", "promote", "switchover",
                                        "upgrade", "shell"]


def test_file_before_the_command_and_from_the_environment(spec: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert cli("-f", str(spec), "validate", cwd=elsewhere).stdout == "ok\n"
    assert cli("--file", str(spec), "validate", cwd=elsewhere).stdout == "ok\n"
    assert cli("validate", cwd=elsewhere, env={"DEPLOYSTACK_FILE": str(spec)}).stdout == "ok\n"
    # the command's own -f wins over the one before it and over the environment
    assert cli("-f", "nope.yaml", "validate", "-f", str(spec), cwd=elsewhere).stdout == "ok\n"
    assert cli("validate", "-f", str(spec), cwd=elsewhere, env={"DEPLOYSTACK_FILE": "nope.yaml"}).stdout == "ok\n"
    wrong = cli("-f", str(spec), "validate", "-f", "nope.yaml", cwd=elsewhere)
    assert wrong.returncode == 2
    assert wrong.stderr == "error: spec file nope.yaml not found (deploystack init writes one)\n"
    # and the one before the command wins over the environment
    assert cli("-f", str(spec), "validate", cwd=elsewhere, env={"DEPLOYSTACK_FILE": "nope.yaml"}).stdout == "ok\n"


def test_output_before_the_command_and_its_precedence(spec: Path, tmp_path: Path) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    history.append(ours, record("shop/backend:ours", "shop/backend:a"))
    history.append(other, record("shop/backend:other", "shop/backend:a"))
    runner = CliRunner()

    def images(*args: str, env: dict[str, str] | None = None) -> list[str]:
        result = runner.invoke(app, [*args], env=env)
        assert result.exit_code == 0, result.output
        return [r["image"] for r in json.loads(result.output)]

    assert images("-f", str(spec), "history", "--json") == []  # stack/ beside the spec
    assert images("-f", str(spec), "-o", str(ours), "history", "--json") == ["shop/backend:ours"]
    assert images("-o", str(ours), "history", "--json", "-f", str(spec)) == ["shop/backend:ours"]
    assert images("-o", str(other), "history", "-o", str(ours), "--json", "-f", str(spec)) == ["shop/backend:ours"]
    assert images("-o", str(ours), "history", "--json", "-f", str(spec),
                  env={OUTPUT_ENV: str(other)}) == ["shop/backend:ours"]
    assert images("history", "--json", "-f", str(spec), env={OUTPUT_ENV: str(other)}) == ["shop/backend:other"]
    assert images("-f", str(spec), "history", "--json", env={OUTPUT_ENV: str(other)}) == ["shop/backend:other"]


def test_logs_dash_f_follows_as_in_compose(spec: Path) -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    logs = root.commands["logs"]
    with root.make_context("deploystack", ["-f", str(spec), "logs", "-f"]) as root_ctx, \
            logs.make_context("logs", ["-f"], parent=root_ctx) as ctx:
        assert ctx.params["follow"] is True and ctx.params["file"] == spec
    with logs.make_context("logs", ["--follow", "--file", str(spec), "backend"]) as ctx:
        assert ctx.params == {**ctx.params, "follow": True, "file": spec, "service": "backend"}


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_no_command_gives_one_option_string_two_meanings() -> None:
    for path, command in _commands(typer.main.get_command(app)):
        strings = [opt for param in command.params for opt in (*param.opts, *param.secondary_opts)]
        assert len(strings) == len(set(strings)), (path, sorted(strings))


def test_help_texts_name_only_options_the_command_has() -> None:
    """`rollback --help` said `--ref`, an option of deploy only."""
    root = typer.main.get_command(app)
    everywhere = {opt for param in root.params for opt in param.opts} | {"--help"}
    for path, command in _commands(root):
        own = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        text = " ".join([command.help or "", *(getattr(param, "help", None) or "" for param in command.params)])
        named = set(re.findall(r"(?<![\w`])--[a-z][a-z-]+", text))
        assert named <= own | everywhere, (path, named - own - everywhere)


def test_the_output_variable_is_the_one_the_cdc_container_has() -> None:
    assert OUTPUT_ENV == OUTPUT_PATH


def _modules_after(*args: str) -> set[str]:
    probe = ("import sys\nfrom deploystack.cli import main\nsys.argv = ['deploystack', *sys.argv[1:]]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=REPO,
                            timeout=60, env={**os.environ, **NO_ENGINE})
    return set(result.stderr.splitlines()[-1].split())


HEAVY = {"docker", "jinja2", "cryptography", "rich", "requests", "urllib3", "graphviz", "dotenv"}


def test_help_loads_typer_and_nothing_heavy() -> None:
    """Speed is an import set: --help must not pay for the renderers, Docker, rich or the spec models."""
    loaded = _modules_after("--help")
    assert "typer" in loaded
    assert loaded & (HEAVY | {"pydantic", "ruamel", "packaging"}) == set()


def test_validate_loads_the_spec_models_and_nothing_heavy(spec: Path) -> None:
    loaded = _modules_after("validate", "-f", str(spec))
    assert "pydantic" in loaded
    assert loaded & (HEAVY | {"packaging"}) == set()  # packaging: only for an app that pins requires-python


def test_generate_loads_no_docker_client_and_no_cryptography(spec: Path, tmp_path: Path) -> None:
    """generate renders: jinja2 and the spec, but neither the Docker client (docker-py's .dockerignore
    matcher is loaded on its own), nor cryptography (only an offsite replica needs keys), nor rich."""
    loaded = _modules_after("generate", "-f", str(spec), "-o", str(tmp_path / "stack"))
    assert {"pydantic", "jinja2"} <= loaded
    assert loaded & (HEAVY - {"jinja2", "dotenv"}) == set()


def test_cli_modules_keep_their_annotations_as_objects() -> None:
    """typer reads the annotations of every command at each start: kept as strings (`from __future__ import
    annotations`), each is evaluated again on every run, which doubled the cost of building the commands."""
    with_strings = [path.name for path in (REPO / "deploystack" / "cli").glob("*.py")
                    if re.search(r"^from __future__ import annotations", path.read_text(), re.MULTILINE)]
    assert with_strings == []


@pytest.mark.parametrize("raw", ["plain", "tab\there", "crlf line\r", "bell\a and backspace\b", "[bold]not markup[/]",
                                 "ünïcode ✓", "   leading spaces", ""])
def test_plain_output_prints_what_rich_printed(raw: str, capsys: pytest.CaptureFixture[str]) -> None:
    console.say(raw)
    ours = capsys.readouterr().out
    Console(highlight=False, soft_wrap=True, width=160).out(raw)
    assert ours == capsys.readouterr().out


def _bad_paths(root: Path, spec: Path) -> list[tuple[list[str], str]]:
    """(arguments, the path the one-line error must name)."""
    afile, folder = root / "afile", root / "folder"
    afile.write_text("not a folder\n")
    folder.mkdir()
    s = str(spec)
    return [
        (["init", "-f", "sub/dir/x.yaml"], "sub/dir"),
        (["init", "-f", f"{afile}/x.yaml"], str(afile)),
        (["init", "-f", str(folder)], str(folder)),
        (["-f", "sub/dir/x.yaml", "init"], "sub/dir"),
        (["init", "-f", "/proc/x.yaml"], "/proc"),
        (["validate", "-f", str(folder)], str(folder)),
        (["validate", "-f", "missing.yaml"], "missing.yaml"),
        (["validate", "-f", f"{afile}/x.yaml"], str(afile)),
        (["-f", str(folder), "validate"], str(folder)),
        (["generate", "-f", s, "-o", str(afile)], str(afile)),
        (["generate", "-f", s, "-o", f"{afile}/sub"], str(afile)),
        (["-o", str(afile), "generate", "-f", s], str(afile)),
        (["generate", "-f", s, "-o", "/proc/x"], "/proc"),
        (["generate", "-f", s, "--ca-bundle", "missing.crt"], "missing.crt"),
        (["generate", "-f", s, "--ca-bundle", str(folder)], str(folder)),
        (["generate", "-f", str(folder)], str(folder)),
        (["diagram", "-f", s, "-o", f"{afile}/x.mmd"], str(afile)),
        (["diagram", "-f", s, "-o", "/proc/x.mmd"], "/proc"),
        (["export", "swarm", "-f", s, "-o", f"{afile}/stack.yaml"], str(afile)),
        (["export", "swarm", "-f", s, "-o", "/proc/stack.yaml"], "/proc"),
        (["export", "swarm", "-f", s, "--stack-output", str(afile)], str(afile)),
        (["history", "-f", s, "-o", str(afile)], str(afile)),
        (["db", "backup", str(afile), "-f", s], str(afile)),
        (["media", "backup", f"{afile}/sub", "-f", s], str(afile)),
        (["down", "-f", str(folder)], str(folder)),
        (["logs", "--file", str(folder)], str(folder)),
        (["ps", "-f", "missing.yaml"], "missing.yaml"),
    ]


def test_bad_paths_are_one_line_and_exit_2(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    failures = []
    for args, named in _bad_paths(tmp_path, spec):
        result = cli(*args, cwd=tmp_path)
        lines = result.stderr.splitlines()
        if result.returncode != 2 or len(lines) != 1 or named not in lines[0] or "Traceback" in result.stderr:
            failures.append(f"{args}: exit {result.returncode}, stderr {result.stderr[-300:]!r}")
    assert failures == []
    assert not (tmp_path / "sub").exists() and not (tmp_path / "stack").exists()


def test_the_readme_short_spec_brings_up_what_init_writes(tmp_path: Path) -> None:
    from deploystack.plan.project import build_plan
    from deploystack.spec import load_stack

    readme = (REPO / "README.md").read_text()
    short = re.search(r"A short spec is enough.*?```yaml\n(.*?)```", readme, re.S)
    assert short is not None
    (tmp_path / "manage.py").write_text("# stand-in\n")
    starter = tmp_path / "starter.yaml"
    assert cli("init", "-f", str(starter)).returncode == 0
    (tmp_path / "short.yaml").write_text(short.group(1))
    services = [sorted(s.name for s in build_plan(load_stack(spec)).services)
                for spec in (starter, tmp_path / "short.yaml")]
    assert services[0] == services[1]
    listed = re.findall(r"`([a-z0-9-]+)`", readme[short.end():].split("\n\n")[1])
    assert sorted(listed) == services[0]


def test_export_swarm_says_what_does_not_carry_over(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC + "cdc: true\n")
    (tmp_path / "ca.crt").write_text("")
    result = cli("export", "swarm", "-f", str(spec), "--ca-bundle", str(tmp_path / "ca.crt"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: lbc.bind 127.0.0.1 is ignored on a swarm: ports 80 and 443 listen on every address of each node "
        "labelled deploystack.edge (firewall them where they must not be public)",
        "warning: cdc is left out on a swarm (no /_cdc/ webhook): deploy with deploystack up --engine swarm",
        "warning: services are placed by node label: give nodes deploystack.data, deploystack.db-primary, "
        "deploystack.db-replica, deploystack.edge before deploying (docker node update --label-add LABEL=true NODE; "
        "docs/swarm.md)",
    ]
    public = write_spec(tmp_path, SPEC + "lbc: {bind: 0.0.0.0}\ndbc: {replicas: 0}\n")
    result = cli("export", "swarm", "-f", str(public), "--ca-bundle", str(tmp_path / "ca.crt"))
    assert result.returncode == 0 and "lbc.bind" not in result.stderr and "cdc" not in result.stderr
    assert "deploystack.db-replica" not in result.stderr and "deploystack.edge" in result.stderr


def test_the_live_display_numbers_steps_times_them_and_names_what_is_awaited() -> None:
    import io

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=200, color_system=None)
    with console.LiveProgress(console=terminal) as live:
        live.step("building shop/backend:abc")
        live.step("creating shop-db-primary")
        live.step("creating shop-backend-1")
        live.step("creating shop-backend-2")
        assert live.waiting == ["shop-db-primary", "shop-backend-1", "shop-backend-2"]
        now = io.StringIO()
        Console(file=now, width=200, color_system=None).print(live)
        assert "step 4 · creating shop-backend-2 · 0s · waiting for shop-db-primary, shop-backend-1, " \
               "shop-backend-2" in now.getvalue()
        live.step("shop-db-primary ready")
        assert live.waiting == ["shop-backend-1", "shop-backend-2"]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).replace("\r", "\n")
    kept = [line for line in plain.splitlines() if line.startswith("• ")]
    assert [re.sub(r"\(\d+\.\ds\)", "(T)", line) for line in kept] == [
        "• building shop/backend:abc (T)", "• creating shop-db-primary (T)", "• creating shop-backend-1 (T)",
        "• creating shop-backend-2 (T)", "• shop-db-primary ready (T)"]


def test_plain_lines_when_not_on_a_terminal() -> None:
    assert type(console.progress()) is console.Progress  # pytest's stderr is no terminal


def test_db_upgrade_needs_ha_patroni_in_the_spec(spec: Path) -> None:
    result = cli("db", "upgrade", "--yes", "-f", str(spec))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: db upgrade moves a stack to Patroni and PostgreSQL 17: set `ha: patroni` under dbc in the spec first"]
    assert not (spec.parent / "stack").exists()  # nothing written
