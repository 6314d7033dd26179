"""The media store's data: usage, and backups of its volume as tarballs with retention.

A backup pauses the media container while a throwaway container (the media image, no network) tars
its volume, so the copy is consistent; requests to /media/ wait for those seconds rather than fail.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from deploystack.engine.client import engine_errors, run_once
from deploystack.engine.health import Readiness
from deploystack.engine.lookup import service_container
from deploystack.engine.report import Reporter
from deploystack.errors import EngineError, StackError
from deploystack.plan.model import Service
from deploystack.plan.names import volume_name

SERVICE = "media"
VOLUME = "media-data"


def backup_prefix(project: str) -> str:
    return f"media-{project}-"


def media_container(client: docker.DockerClient, project: str) -> Container:
    return service_container(client, project, SERVICE)


def usage_bytes(client: docker.DockerClient, project: str) -> int:
    container = media_container(client, project)
    with engine_errors("measuring media usage"):
        code, out = container.exec_run(["du", "-sb", "/data"])
    if code != 0:
        raise StackError(f"du in {container.name} failed: {out.decode(errors='replace').strip()}")
    return int(out.split()[0])


def _run_with_volume(client: docker.DockerClient, image: str, project: str, folder: Path, script: str,
                     file_name: str, volume_read_only: bool) -> None:
    """Run `script` with the volume at /data and `folder` at /backup; the file name is its $1, never
    pasted into the script (it may come from the user)."""
    with engine_errors("running the backup container"):
        try:
            run_once(
                client, image, ["bash", "-c", script, "backup", file_name], entrypoint=[],
                network_mode="none", user="root",
                volumes={volume_name(project, VOLUME): {"bind": "/data", "mode": "ro" if volume_read_only else "rw"},
                         str(folder): {"bind": "/backup", "mode": "rw" if volume_read_only else "ro"}},
            )
        except docker.errors.ContainerError as exc:
            raise StackError(f"media backup container failed: {exc.stderr.decode(errors='replace').strip()}") from None


PAUSE_ATTEMPTS = 5


def _pause(container: Container, report: Reporter) -> None:
    """Freeze the container's processes. The kernel's cgroup freezer gives up on a process that stays in
    uninterruptible I/O, and runc then reports "unable to freeze" and thaws the rest: on a loaded machine
    that happens to a store flushing writes, so it is tried again before the backup fails."""
    for attempt in range(1, PAUSE_ATTEMPTS + 1):
        try:
            with engine_errors(f"pausing {container.name}"):
                container.pause()
            return
        except EngineError as exc:
            if "unable to freeze" not in str(exc) or attempt == PAUSE_ATTEMPTS:
                raise
            report.detail(f"{container.name} could not be frozen yet (attempt {attempt}); trying again")
            time.sleep(attempt)


def backup(client: docker.DockerClient, project: str, folder: Path, keep: int, report: Reporter,
           suffix: str = "") -> Path:
    """Tar the media volume into `folder`, then keep only the `keep` newest backups of this project."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    container = media_container(client, project)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{backup_prefix(project)}{stamp}{suffix}.tar.gz"
    image = container.attrs["Config"]["Image"]
    running = container.status == "running"
    report.step(f"backing up {volume_name(project, VOLUME)} to {folder / name}")
    if running:
        _pause(container, report)
    try:
        # Written under a temporary name and renamed: a half-written backup never looks like a backup.
        _run_with_volume(client, image, project, folder,
                         'tar -C /data -czf "/backup/.$1.partial" . && mv "/backup/.$1.partial" "/backup/$1"',
                         name, volume_read_only=True)
    finally:
        with engine_errors(f"resuming {container.name}"):
            if running:
                container.unpause()
    for old in sorted(folder.glob(f"{backup_prefix(project)}*.tar.gz"))[:-keep]:
        report.step(f"removing old backup {old.name} (keeping {keep})")
        old.unlink()
    return folder / name


def restore(client: docker.DockerClient, project: str, archive: Path, service: Service, report: Reporter) -> None:
    """Replace the media volume's content with `archive`'s, then wait until the store is healthy again."""
    container = media_container(client, project)
    image = container.attrs["Config"]["Image"]
    report.step(f"stopping {container.name}")
    with engine_errors(f"stopping {container.name}"):
        container.stop(timeout=service.stop_grace_s)
    try:
        report.step(f"restoring {volume_name(project, VOLUME)} from {archive}")
        _run_with_volume(client, image, project, archive.parent,
                         'find /data -mindepth 1 -delete && tar -C /data -xzf "/backup/$1"',
                         archive.name, volume_read_only=False)
    finally:
        with engine_errors(f"starting {container.name}"):
            container.start()
    check = Readiness(client, container.name or "", service, report)
    while not check.poll():
        time.sleep(0.5)
    report.step(f"{container.name} healthy again")
