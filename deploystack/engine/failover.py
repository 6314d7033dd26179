"""Promoting a replica when the primary is lost, keeping the service names (and so every app's settings).

The promoted replica's data moves into the `db-primary` volume, so `db-primary` stays the primary's name:
apps, the spec and compose.yaml need no change, and apps reconnect on their own. What the lost primary's
volume held is copied aside first (nothing lost), and every replica starts again from the new primary
(a replica that was ahead of the promoted one could not follow its new timeline).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import docker
import docker.errors
from docker.models.containers import Container

from deploystack import labels
from deploystack.engine.client import engine_errors, run_once
from deploystack.engine.db import db_containers, psql
from deploystack.engine.report import Reporter
from deploystack.errors import StackError, UsageError
from deploystack.plan.names import PRIMARY, data_volume, volume_name

PGDATA = "/var/lib/postgresql/data"


def _run(client: docker.DockerClient, image: str, script: str, volumes: dict[str, dict[str, str]]) -> None:
    """A throwaway root container from the database image, with no network, to move data between volumes."""
    with engine_errors("moving database files"):
        try:
            run_once(client, image, ["bash", "-c", script], entrypoint=[], user="root", network_mode="none",
                     volumes=volumes)
        except docker.errors.ContainerError as exc:
            raise StackError(f"moving database files failed: {exc.stderr.decode(errors='replace').strip()}") from None


def _stop(container: Container, report: Reporter) -> None:
    if container.status == "running":
        report.step(f"stopping {container.name}")
        with engine_errors(f"stopping {container.name}"):
            container.stop(timeout=60)  # a clean shutdown writes a checkpoint: the files are consistent


def promote(client: docker.DockerClient, project: str, replica: str, replicas: Sequence[str], force: bool,
            report: Reporter) -> str:
    """Promote `replica` and make its data the primary's; returns the name of the volume keeping the old data."""
    if replica not in replicas:
        raise UsageError(f"{replica!r} is not a replica of this stack (replicas: {', '.join(replicas) or 'none'})")
    nodes = db_containers(client, project)
    candidate, primary = nodes.get(replica), nodes.get(PRIMARY)
    if candidate is None or candidate.status != "running":
        raise UsageError(f"{replica} is not running: only a running replica can be promoted")
    if primary is not None and primary.status == "running" and not force:
        raise UsageError(f"{PRIMARY} is still running: promote a replica when the primary is lost, or pass "
                         "--force to stop it and promote anyway (writes the replica has not received are set "
                         "aside with the old primary's data)")
    image = str(candidate.attrs["Config"]["Image"])

    if primary is not None:
        _stop(primary, report)  # fenced: it must never accept writes again next to the new primary
    report.step(f"promoting {candidate.name}")
    out, error = psql(client, candidate, "SELECT pg_promote(true, 60) AS promoted")
    if error is not None or "t" not in (out or ""):
        raise StackError(f"promoting {candidate.name} failed: {error or out}")
    for name in replicas:
        if name in nodes:
            _stop(nodes[name], report)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = f"{data_volume(PRIMARY)}-before-promote-{stamp}"
    with engine_errors(f"creating volume {kept}"):
        client.volumes.create(volume_name(project, kept), labels={labels.PROJECT: project, labels.VOLUME: kept})
    report.step(f"keeping the old primary's data in volume {volume_name(project, kept)}")
    _run(client, image, "cp -a /from/. /to/", {
        volume_name(project, data_volume(PRIMARY)): {"bind": "/from", "mode": "ro"},
        volume_name(project, kept): {"bind": "/to", "mode": "rw"}})
    report.step(f"moving {replica}'s data into {volume_name(project, data_volume(PRIMARY))}")
    # The promoted cluster has no standby.signal; its standby settings in postgresql.auto.conf are dead
    # weight on a primary, so they go too.
    _run(client, image,
         "find /to -mindepth 1 -delete && cp -a /from/. /to/ && rm -f /to/standby.signal "
         "&& sed -i -e '/^primary_conninfo/d' -e '/^primary_slot_name/d' /to/postgresql.auto.conf", {
             volume_name(project, data_volume(replica)): {"bind": "/from", "mode": "ro"},
             volume_name(project, data_volume(PRIMARY)): {"bind": "/to", "mode": "rw"}})
    for name in replicas:
        report.step(f"emptying {name}'s volume: it clones the new primary when it starts")
        _run(client, image, "find /data -mindepth 1 -delete",
             {volume_name(project, data_volume(name)): {"bind": "/data", "mode": "rw"}})
    return volume_name(project, kept)
