"""Container hardening, as `docker inspect` shows it on the running default stack: no new privileges,
every capability dropped and only the role's own added back, memory and pids limits, read-only roots
where promised, rotated json-file logs; Redis refuses its dangerous commands to the apps' password."""

from __future__ import annotations

from typing import Any

import pytest

from deploystack.spec.loader import load_stack
from tests.e2e.conftest import Stack
from tests.unit.test_hardening import EXPECTED_CAPS as ROLE_CAPS

pytestmark = pytest.mark.docker

# What each service adds back (docs/security.md says why); every other capability is dropped. The apps
# add none.
EXPECTED_CAPS = ROLE_CAPS | {app: set() for app in ("backend", "backend-worker", "backend-migrate", "frontend",
                                                   "frontend-migrate", "bff", "bff-migrate")}
READ_ONLY = {"redis", "memcached", "rabbitmq", "media", "cdc", "backend", "backend-worker", "backend-migrate",
             "frontend", "frontend-migrate", "bff", "bff-migrate"}


def caps(names: list[str] | None) -> set[str]:
    return {name.removeprefix("CAP_") for name in names or []}


def test_every_container_is_hardened_and_rotates_its_logs(stack: Stack) -> None:
    spec = load_stack(stack.spec)
    containers = stack.containers()
    seen = {c.labels["com.docker.compose.service"] for c in containers}
    assert seen == set(EXPECTED_CAPS), "the stack's services changed: say what each one is allowed"
    for container in containers:
        service = container.labels["com.docker.compose.service"]
        host: dict[str, Any] = container.attrs["HostConfig"]
        where = f"{container.name}: "
        assert host["SecurityOpt"] == ["no-new-privileges:true"], where + str(host["SecurityOpt"])
        assert caps(host["CapDrop"]) == {"ALL"}, where + str(host["CapDrop"])
        assert caps(host["CapAdd"]) == EXPECTED_CAPS[service], where + str(host["CapAdd"])
        assert host["Memory"] > 0, where + "no memory limit"
        assert (host["PidsLimit"] or 0) > 0, where + "no pids limit"
        assert host["ReadonlyRootfs"] is (service in READ_ONLY), where + f"ReadonlyRootfs {host['ReadonlyRootfs']}"
        log = host["LogConfig"]
        assert log == {"Type": "json-file", "Config": {"max-size": spec.logging.max_size,
                                                        "max-file": str(spec.logging.max_file)}}, where + str(log)
    (primary,) = stack.containers("db-primary")
    assert primary.attrs["HostConfig"]["Memory"] == 1 << 30  # dbc.memory's default, 1g
    # What the hardening takes away is gone inside too: a read-only root refuses a write outside the tmpfs.
    code, out = stack.under_test.exec("backend", ["sh", "-c", "touch /app/x 2>&1; touch /tmp/x && echo tmp-ok"])
    assert "Read-only file system" in out and "tmp-ok" in out, out


def test_the_stack_still_serves_with_hardened_containers(stack: Stack) -> None:
    """Every role under its restrictions: the LBC (nginx workers, fail2ban), the apps, the database, caches."""
    assert stack.get("/api/health/").status_code == 200
    assert stack.get("/").status_code == 200
    code, out = stack.under_test.exec("lbc", ["fail2ban-client", "ping"])
    assert code == 0 and "pong" in out, out
    # nginx's reopen (after lbc-supervise rotates fail2ban's log) hands the log to its workers' user; the
    # reload's `nginx -t`, as root, must still open it.
    conf = "/etc/deploystack/nginx.conf"
    code, out = stack.under_test.exec("lbc", ["sh", "-c", f"nginx -s reopen -c {conf} && sleep 1 && lbc-reload"])
    assert code == 0, out
    assert stack.get("/api/health/").status_code == 200


def test_redis_refuses_dangerous_commands_to_the_apps_password(stack: Stack) -> None:
    """CONFIG (which rewrites files), FLUSHALL (every database: Celery's queue and results too) and
    MODULE are denied to an app's Redis user, and so are FLUSHDB, KEYS and keys outside its `backend:`
    prefix; what the app uses (its own keys) still works."""
    script = (
        "import os, redis\n"
        "r = redis.Redis.from_url(os.environ['REDIS_URL'])\n"
        "r.set('backend:hardening-probe', 'x', ex=60); assert r.get('backend:hardening-probe') == b'x'\n"
        "for command in (('CONFIG', 'GET', 'dir'), ('FLUSHALL',), ('MODULE', 'LIST'), ('ACL', 'WHOAMI'),\n"
        "                ('FLUSHDB',), ('KEYS', '*'), ('GET', 'frontend:x'), ('SET', 'hardening:probe', 'x')):\n"
        "    try:\n"
        "        r.execute_command(*command)\n"
        "    except redis.exceptions.NoPermissionError:\n"
        "        print('refused', command[0])\n"
        "    else:\n"
        "        print('ALLOWED', command[0])\n"
    )
    code, out = stack.under_test.exec("backend", ["python", "-c", script])
    assert code == 0, out
    assert "ALLOWED" not in out and out.count("refused") == 8, out
    # Protected mode is on (with a password set it admits only clients that authenticate).
    (redis,) = stack.containers("redis")
    code, conf = redis.exec_run(["grep", "-c", "^protected-mode yes", "/run/redis/redis.conf"], user="redis")
    assert code == 0, conf
