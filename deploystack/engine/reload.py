"""Reloading a running service's configuration in place: the one path of `up`, `scale`, `deploy` and `rollback`.

A service with a `reload` command (the LBC's `lbc-reload`; Patroni's router) takes a change of its rendered
files without a restart. `reload_service`:

1. writes the service's rendered files where its container reads them, atomically and only those that
   differ (`up` has written them already; a rollout's `restore` puts the old definition's back);
2. decides (`decide`, pure): a container made in this run loaded its files at start and is only marked;
   one whose loaded hash is the wanted one is left alone unless forced (an app replica was added, replaced
   or removed: nginx resolves the upstreams' names at reload); otherwise it reloads;
3. runs the command, then waits (bounded, DRAIN_SECONDS) for nginx's old workers to finish the requests
   they hold;
4. records inside the container the hash of the files it has loaded (APPLIED_HASH_FILE), so this needs no
   state on the host and `up` twice reloads nothing the second time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from enum import Enum
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from deploystack.engine.client import engine_errors
from deploystack.engine.containers import config_files_hash
from deploystack.engine.report import Reporter
from deploystack.errors import EngineError
from deploystack.plan.model import Service
from deploystack.render.project import Rendered
from deploystack.render.sourcetree import FileData
from deploystack.render.writer import differs, replace_file

APPLIED_HASH_FILE = "/run/deploystack-config-hash"  # inside a reloadable container: config it has loaded
DRAIN_SECONDS = 10.0


class Decision(Enum):
    SKIP = "skip"  # it has loaded these files already
    MARK = "mark"  # made in this run: it loaded them at start; record the hash only
    RELOAD = "reload"


def decide(have: str, want: str, fresh: bool, force: bool) -> Decision:
    """What to do with a running reloadable container that has loaded `have` when `want` is rendered."""
    if fresh:
        return Decision.MARK
    if have == want and not force:
        return Decision.SKIP
    return Decision.RELOAD


def stale_files(files: Mapping[str, FileData], config_dir: str, output: Path) -> list[str]:
    """The rendered files below `config_dir` whose bytes on disk (below `output`) differ or are missing
    (writer.differs, bytes only)."""
    prefix = config_dir + "/"
    return [name for name in sorted(n for n in files if n.startswith(prefix))
            if differs(os.path.join(output, name), files[name], mode=False) is not False]


def reload_service(client: docker.DockerClient, rendered: Rendered, service: Service, report: Reporter,
                   force: bool = False, fresh: bool = False) -> bool:
    """Bring `service`'s running container onto `rendered`'s files (see the module's docstring).

    `fresh`: the container was made in this run. `force`: reload even when its loaded hash is current.
    True when the reload command ran; nothing happens when the container is missing or not running.
    """
    if service.reload is None:
        return False
    name = rendered.plan.container_name(service)
    with engine_errors(f"reloading {name}"):
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            return False
        if container.status != "running":
            return False
        if service.config_dir is not None:
            # Atomically: the container bind-mounts the folder and must never read half a file.
            for path in stale_files(rendered.files, service.config_dir, rendered.output):
                replace_file(rendered.output / path, rendered.files[path])
        want = config_files_hash(rendered, service)
        decision = decide(applied_hash(container), want, fresh, force)
        if decision is Decision.SKIP:
            return False
        if decision is Decision.RELOAD:
            run_reload(container, service.reload, report)
        mark_applied(container, want)
    return decision is Decision.RELOAD


def applied_hash(container: Container) -> str:
    """The hash of the config files the container last loaded ('' when none is recorded)."""
    code, out = container.exec_run(["cat", APPLIED_HASH_FILE])
    return out.decode().strip() if code == 0 else ""


def run_reload(container: Container, command: tuple[str, ...], report: Reporter) -> None:
    """Run a service's reload command in its running container, then let nginx's old workers drain."""
    code, out = container.exec_run(list(command))
    if code != 0:
        raise EngineError(f"reloading {container.name} failed, the old configuration stays in use:\n"
                          + out.decode(errors="replace").strip())
    wait_for_old_workers(container, report)


def mark_applied(container: Container, config_hash: str) -> None:
    """Record inside the container the hash of the config files it has loaded (APPLIED_HASH_FILE)."""
    container.exec_run(["sh", "-c", f"echo {config_hash} > {APPLIED_HASH_FILE}"])


def wait_for_old_workers(container: Container, report: Reporter) -> None:
    """After a reload, nginx's old workers finish the requests they hold; wait (bounded) for them."""
    # "[s]hutting": the pattern must not match this sh -c's own command line.
    count = ["sh", "-c", "grep -l '[s]hutting down' /proc/[0-9]*/cmdline 2>/dev/null | wc -l"]
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        code, out = container.exec_run(count)
        if code != 0 or out.decode().strip() == "0":
            return
        time.sleep(0.2)
    report.detail(f"old nginx workers still draining after {DRAIN_SECONDS}s; going on")
