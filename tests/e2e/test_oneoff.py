"""One-off commands on the running demo stack: `manage`, `run`, `exec`, `db shell`, as a user runs them
(the CLI in a subprocess), checked where a user would check them: the Django admin through the LBC, the
API, psql, and the engine's list of containers afterwards."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from ruamel.yaml import YAML

from deploystack.operations.db import app_database
from tests.conftest import eventually
from tests.e2e.conftest import Stack

ONEOFF = "com.docker.compose.oneoff"


def deploystack(stack: Stack, command: list[str], words: list[str], stdin: str | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`deploystack COMMAND -f SPEC -o OUTPUT WORDS...`: -f and -o come first, because after the app (or
    `--`) every word belongs to the command run."""
    argv = [sys.executable, "-m", "deploystack", *command, "-f", str(stack.spec),
            "-o", str(stack.under_test.target.output), *words]
    return subprocess.run(argv, input=stdin if stdin is not None else "", capture_output=True, text=True,
                          timeout=300, env=os.environ | (env or {}))


def oneoffs(stack: Stack) -> list[str]:
    return [c.name or "" for c in stack.containers() if c.labels.get(ONEOFF) == "True"]


def test_manage_migrate_check_passes_and_leaves_no_container(stack: Stack) -> None:
    result = deploystack(stack, ["manage"], ["backend", "migrate", "--check"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert oneoffs(stack) == []
    unknown = deploystack(stack, ["manage"], ["backend", "nosuchcommand"])
    assert unknown.returncode == 1 and "Unknown command: 'nosuchcommand'" in unknown.stderr, unknown.stderr


def test_exit_codes_pass_through(stack: Stack) -> None:
    assert deploystack(stack, ["run"], ["backend", "--", "sh", "-c", "exit 7"]).returncode == 7
    assert deploystack(stack, ["run"], ["bff", "--", "true"]).returncode == 0
    assert deploystack(stack, ["exec"], ["redis", "--", "sh", "-c", "exit 3"]).returncode == 3
    assert oneoffs(stack) == []


def test_a_oneoff_runs_with_the_app_environment_and_compose_labels(stack: Stack) -> None:
    """While it runs, the one-off is on the app's networks with its secrets and Compose's one-off labels,
    and no replica alias, and no command takes it for a replica; a SIGTERM to deploystack reaches the
    command, and the container goes."""
    argv = [sys.executable, "-m", "deploystack", "run", "-f", str(stack.spec), "-o",
            str(stack.under_test.target.output), "backend", "--", "sh", "-c",
            'python -c "import socket; socket.create_connection((\'db-primary\', 5432), 3)" && echo ready; '
            "trap 'exit 143' TERM; sleep 300 & wait"]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        container = eventually(lambda: [c for c in stack.containers("backend") if c.labels.get(ONEOFF) == "True"],
                               "the one-off container", timeout=60)[0]
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", "the one-off reaches the database"
        labels = container.labels
        assert labels["com.docker.compose.project"] == stack.project
        assert labels["com.docker.compose.service"] == "backend"
        assert labels["com.docker.compose.container-number"] == "-1"
        assert re.fullmatch(r"[0-9a-f]{64}", labels["com.docker.compose.slug"])
        assert container.name == f"{stack.project}-backend-run-{labels['com.docker.compose.slug'][:12]}"
        replica = stack.containers("backend")
        replica_env = next(c for c in replica if c.labels.get(ONEOFF) != "True").attrs["Config"]["Env"]
        assert {e for e in replica_env if e.startswith(("DB_PASSWORD=", "DJANGO_SECRET_KEY="))} <= set(
            container.attrs["Config"]["Env"])
        networks = container.attrs["NetworkSettings"]["Networks"]
        assert set(networks) == {f"{stack.project}_private"}
        assert "backend" not in (networks[f"{stack.project}_private"].get("Aliases") or []), \
            "a one-off must not answer for the app's name"
        # Neither ps nor up takes it for a replica: up leaves the stack as it is.
        assert container.name not in stack.cli("ps", "--json").stdout
        assert "(nothing changed)" in stack.cli("up").stdout
        assert process.poll() is None and container.name in oneoffs(stack)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    finally:
        if process.poll() is None:  # a failed check above: deploystack still removes its container
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    eventually(lambda: oneoffs(stack) == [], "the one-off removed", timeout=30)


def test_a_terminal_gets_a_tty_and_a_pipe_does_not(stack: Stack, tmp_path: Path) -> None:
    if shutil.which("script") is None:
        pytest.skip("util-linux's script makes the terminal")
    # --verbosity 0: Django 5.2's shell says how many models it imported; only the command's line is wanted.
    words = ["backend", "shell", "--verbosity", "0", "-c",
             "import sys; print('TERMINAL' if sys.stdin.isatty() else 'PIPE')"]
    argv = [sys.executable, "-m", "deploystack", "manage", "-f", str(stack.spec),
            "-o", str(stack.under_test.target.output), *words]
    terminal = subprocess.run(["script", "-qec", shlex.join(argv), "/dev/null"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)
    assert terminal.returncode == 0 and "TERMINAL" in terminal.stdout, terminal.stdout + terminal.stderr
    # At a terminal but with stdout to a file (dumpdata > dump.json): no TTY, the command's own bytes.
    redirected = tmp_path / "out.txt"
    subprocess.run(["script", "-qec", f"{shlex.join(argv)} > {shlex.quote(str(redirected))}", "/dev/null"],
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=True)
    assert redirected.read_bytes() == b"PIPE\n"
    piped = deploystack(stack, ["manage"], words)
    assert (piped.returncode, piped.stdout.strip()) == (0, "PIPE"), piped.stderr


def test_createsuperuser_logs_in_to_the_admin_through_the_lbc(stack: Stack) -> None:
    password = "oneoff-" + os.urandom(6).hex()
    result = deploystack(stack, ["manage"], [
        "backend", "createsuperuser", "--noinput", "-e", "DJANGO_SUPERUSER_USERNAME=ada",
        "-e", "DJANGO_SUPERUSER_EMAIL=ada@example.com", "-e", "DJANGO_SUPERUSER_PASSWORD"],
        env={"DJANGO_SUPERUSER_PASSWORD": password})  # -e NAME: the value from the environment
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Superuser created successfully" in result.stdout

    def log_in(secret: str) -> requests.Response:
        session = requests.Session()  # verify=False on each call: REQUESTS_CA_BUNDLE beats session.verify
        login = stack.https + "/api/admin/login/"
        page = session.get(login, params={"next": "/api/admin/"}, timeout=10, verify=False)
        assert page.status_code == 200, page.status_code
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "the login form has a CSRF token"
        return session.post(login + "?next=/api/admin/", timeout=10, verify=False, headers={"Referer": login}, data={
            "csrfmiddlewaretoken": token.group(1), "username": "ada", "password": secret, "next": "/api/admin/"})

    wrong = log_in("not-" + password)
    assert wrong.url.endswith("/api/admin/login/?next=/api/admin/") and "Site administration" not in wrong.text
    answer = log_in(password)
    assert answer.status_code == 200 and answer.url == stack.https + "/api/admin/", answer.url
    assert "Site administration" in answer.text and "ada" in answer.text and "Log out" in answer.text


def test_exec_and_db_shell_answer(stack: Stack) -> None:
    select = deploystack(stack, ["exec"], ["db-primary", "--", "psql", "-h", "/run/postgresql", "-U", "postgres",
                                           "-tAc", "select 1"])
    assert (select.returncode, select.stdout.strip()) == (0, "1"), select.stderr
    second = next(c for c in stack.containers("backend") if c.labels.get("com.docker.compose.container-number") == "2")
    hostname = deploystack(stack, ["exec"], ["backend", "--index", "2", "--", "hostname"])
    assert hostname.stdout.strip() == second.attrs["Config"]["Hostname"]  # the replica's own name
    who = deploystack(stack, ["db", "shell"], ["--", "-tAc", "select current_user || ' ' || current_database()"])
    first = app_database(stack.under_test.stack, None)  # the spec's first app: its own role on its own database
    assert (who.returncode, who.stdout.strip()) == (0, f"{first.role} {first.database}"), who.stderr


def test_loaddata_from_stdin(stack: Stack) -> None:
    text = f"loaded from stdin {os.urandom(4).hex()}"
    fixture = json.dumps([{"model": "notes.note", "pk": 900001,
                           "fields": {"text": text, "created": "2026-12-01T12:00:00Z"}}])
    result = deploystack(stack, ["manage"], ["backend", "loaddata", "--format", "json", "-"], stdin=fixture)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Installed 1 object(s)" in result.stdout
    eventually(lambda: stack.get("/api/notes/900001/").json().get("text") == text, "the note through the API")
    row = deploystack(stack, ["db", "shell"], ["--", "-tAc", "select text from notes_note where id = 900001"])
    assert row.stdout.strip() == text


def test_what_does_not_exist_is_exit_2_naming_what_does(stack: Stack, tmp_path: Path) -> None:
    app = deploystack(stack, ["manage"], ["nosuch", "migrate"])
    assert app.returncode == 2
    assert len(app.stderr.strip().splitlines()) == 1 and "'nosuch'" in app.stderr
    assert all(name in app.stderr for name in ("backend", "frontend", "bff")), app.stderr
    service = deploystack(stack, ["exec"], ["nosuch", "--", "true"])
    assert service.returncode == 2 and all(n in service.stderr for n in ("db-primary", "redis", "lbc")), service.stderr
    replica = deploystack(stack, ["exec"], ["backend", "--index", "9", "--", "true"])
    assert replica.returncode == 2 and "running replicas of backend: 1, 2" in replica.stderr, replica.stderr
    # The same spec under a project that is not up.
    yaml = YAML()
    data = yaml.load(stack.spec)
    data["project"] = f"{stack.project}-down"
    spec = tmp_path / "deploystack.yaml"
    yaml.dump(data, spec)
    assert subprocess.run([sys.executable, "-m", "deploystack", "generate", "-f", str(spec)],
                          capture_output=True, timeout=300).returncode == 0
    down = subprocess.run([sys.executable, "-m", "deploystack", "manage", "-f", str(spec), "backend", "migrate"],
                          capture_output=True, text=True, timeout=300)
    assert down.returncode == 2 and "is not up" in down.stderr, down.stderr
    assert oneoffs(stack) == []


def test_logs_since_tail_and_timestamps(stack: Stack) -> None:
    def logs(*words: str) -> list[str]:
        result = subprocess.run([sys.executable, "-m", "deploystack", "logs", "--file", str(stack.spec), *words],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    everything = logs("db-primary", "--tail", "all")
    last = logs("db-primary", "--tail", "2")
    assert len(everything) > 2 and len(last) == 2
    assert all(line in logs("db-primary", "--tail", "all") for line in last)  # a line may come meanwhile
    stamped = logs("db-primary", "-n", "1", "--timestamps")
    assert len(stamped) == 1
    assert re.fullmatch(r"\S+-db-primary-1 \| \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z .*", stamped[0]), stamped
    assert logs("db-primary", "--tail", "all", "--since", "24h")[:len(everything)] == everything
    assert logs("db-primary", "--since", "2099-01-01T00:00:00Z") == []
