"""What each command does, wired once: spec -> render -> write -> engine. No terminal code here."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from deploystack.errors import LockedError, UsageError
from deploystack.plan.names import DB_ROUTER, NODE_PREFIX
from deploystack.plan.project import subset
from deploystack.render import writer
from deploystack.render.project import (
    ENV_FILE,
    Rendered,
    SwarmRendered,
    check_output_project,
    read_ca_bundle,
    render_project,
    render_swarm,
)
from deploystack.render.sourcetree import FileData
from deploystack.spec import Stack, load_stack
from deploystack.spec.edit import parse_scale_args, set_replicas
from deploystack.spec.loader import read_text, validate_text
from deploystack.target import DEFAULT_SPEC as DEFAULT_SPEC
from deploystack.target import Target as Target

if TYPE_CHECKING:
    from deploystack.backupinfo import BackupsReport
    from deploystack.engine.apply import Outcome
    from deploystack.engine.client import DockerClient
    from deploystack.engine.patroni import ClusterStatus
    from deploystack.engine.report import Reporter
    from deploystack.engine.upgrade import Result
    from deploystack.envlist import EnvRow
    from deploystack.plan.model import AppDatabase

STATE_DIR = ".deploystack"


def render(target: Target, ca_bundle: Path | None = None, stack: Stack | None = None) -> Rendered:
    """The project as the spec has it, in memory (`stack`: the spec, when the caller has loaded it)."""
    stack = stack or load_stack(target.spec)
    check_output_project(target.output, stack.project)  # before fetching into it
    fetch_new_git_sources(stack, target)
    return render_project(stack, target.spec, target.output, read_ca_bundle(ca_bundle))


def fetch_new_git_sources(stack: Stack, target: Target) -> None:
    """An app from git that has no checkout yet gets its branch's head; later, only `deploy` moves it."""
    from deploystack import gitsource

    for name, app in stack.apc.apps.items():
        if app.git is not None and gitsource.head(target.output, name) is None:
            gitsource.fetch(name, app.git, target.spec.resolve().parent, target.output, None)


def generate(target: Target, ca_bundle: Path | None = None, dry_run: bool = False) -> writer.Changes:
    """Render everything in memory, then write what differs (nothing at all with dry_run)."""
    rendered = render(target, ca_bundle)
    changes = writer.compare(rendered.files, rendered.output)
    if not dry_run:
        with project_lock(target.output):
            writer.write(rendered.files, rendered.output, changes)
    return changes


def require_generated(target: Target, project: str) -> None:
    """Commands that change a running stack refuse an output folder that holds no generated stack, or
    another project's: with a mistyped -o they would otherwise generate one, with fresh secrets that
    match nothing running."""
    check_output_project(target.output, project)
    if not (target.output / ENV_FILE).is_file():
        raise UsageError(f"{target.output}: no stack was generated here (no {ENV_FILE}); pass the -o that up "
                         "was given, or run deploystack up first")


@contextmanager
def project_lock(output: Path, wait_s: float = 0, report: Reporter | None = None) -> Iterator[None]:
    """One deploystack run at a time per output directory. A second one fails at once, clearly, or
    with `wait_s` queues behind the first (deploys do: a push during a rollout waits its turn)."""
    state = output / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(state / "lock", "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                if time.monotonic() >= deadline:
                    raise LockedError(f"{output} is busy: deploystack run by {holder} holds its lock; "
                                      "wait for it to finish") from None
                if report is not None and wait_s:
                    report.step(f"waiting for the run of {holder} to finish (queued)")
                    report = None  # say it once
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def build(target: Target, report: Reporter, ca_bundle: Path | None = None, force: bool = False) -> list[str]:
    from deploystack.engine import client, images

    docker_client = client.connect()
    with project_lock(target.output):
        rendered = _generated(target, ca_bundle)
        images.ensure_base_images(docker_client, rendered, report)
        return images.build_images(docker_client, rendered, report, force=force)


def up(target: Target, report: Reporter, ca_bundle: Path | None = None,
       services: list[str] | None = None) -> Outcome:
    """Generate if stale, build what is missing, converge; registry-only images are checked first.

    `services`: only these and what they depend on (deploystack.testing uses it).
    """
    from deploystack.engine import client

    docker_client = client.connect()
    with project_lock(target.output):
        stack = load_stack(target.spec)
        refuse_pending_upgrade(docker_client, stack.project, stack.dbc.ha == "patroni")  # before writing
        rendered = _generated(target, ca_bundle, report, stack)
        if services:
            rendered = dataclasses.replace(rendered, plan=subset(rendered.plan, services))
        return _converge(docker_client, rendered, report, partial=bool(services))


def scale(target: Target, args: list[str], report: Reporter, ca_bundle: Path | None = None,
          swarm: bool = False) -> dict[str, int]:
    """Set replica counts in the spec (comments kept), then converge: new replicas are healthy before
    the LBC reloads with them; leaving ones leave the LBC first, drain, then stop. With `swarm`, a
    service scale of each app: the LBC finds tasks through Docker's DNS, so nothing is regenerated for it.

    The spec file changes only once the edited spec is valid and renders; if converging then fails,
    the spec says what was asked and `deploystack up` carries on from there.
    """
    from deploystack.engine import client
    from deploystack.engine import swarm as engine_swarm

    docker_client = client.connect()
    if swarm:
        engine_swarm.require_manager(docker_client)
    with project_lock(target.output):
        text = read_text(target.spec)
        stack = validate_text(text, target.spec)
        workers = [name for name, app in stack.apc.apps.items() if app.worker is not None]
        replicas = parse_scale_args(args, list(stack.apc.apps), workers)
        new_text = set_replicas(text, replicas)
        new_stack = validate_text(new_text, target.spec)
        check_output_project(target.output, new_stack.project)
        rendered = render_project(new_stack, target.spec, target.output, read_ca_bundle(ca_bundle))
        write_text_atomically(target.spec, new_text)
        changes = writer.compare(rendered.files, rendered.output)
        writer.write(rendered.files, rendered.output, changes)
        report.step("spec updated: " + ", ".join(f"{app}={n}" for app, n in replicas.items()))
        if swarm:
            exported = render_swarm(new_stack, target.spec, rendered)
            _write_swarm(exported)  # the stack file says the new counts too
            if "dbc" in replicas:  # database replicas are services of their own: a deploy adds or prunes them
                engine_swarm.deploy(docker_client, exported, report, registry=bool(new_stack.swarm.registry))
                engine_swarm.remove_gone_replicas(docker_client, exported.plan, rendered.secrets, report)
            apps = {name: count for name, count in replicas.items() if name != "dbc"}
            if apps:
                engine_swarm.scale(docker_client, new_stack.project, apps, report)
        else:
            _converge(docker_client, rendered, report)
        return replicas


def export_swarm(target: Target, stack_file: Path | None = None, ca_bundle: Path | None = None,
                 report: Reporter | None = None) -> SwarmRendered:
    """Write the stack file for `docker stack deploy` (default <output>/swarm/stack.yaml) and the config
    and secret files it names (under <output>/swarm/); the Compose output is brought up to date too, as
    its build contexts make the images and its .env keeps the secrets."""
    with project_lock(target.output):
        return _swarm_generated(target, stack_file, ca_bundle, report)[1]


def _swarm_generated(target: Target, stack_file: Path | None, ca_bundle: Path | None,
                     report: Reporter | None) -> tuple[Rendered, SwarmRendered]:
    rendered = render(target, ca_bundle)
    swarm = render_swarm(load_stack(target.spec), target.spec, rendered, stack_file)  # all in memory first
    write_rendered(rendered, report)
    _write_swarm(swarm)
    return rendered, swarm


def _write_swarm(swarm: SwarmRendered) -> None:
    """The stack file and the config and secret files it names, where they differ from what is there."""
    writer.write(swarm.files, swarm.folder, writer.compare(swarm.files, swarm.folder))
    swarm.stack_file.parent.mkdir(parents=True, exist_ok=True)
    if not swarm.stack_file.is_file() or swarm.stack_file.read_bytes() != swarm.stack_yaml:
        write_bytes_atomically(swarm.stack_file, swarm.stack_yaml)


def up_swarm(target: Target, report: Reporter, ca_bundle: Path | None = None) -> SwarmRendered:
    """Export, build what is missing (and push it with `swarm.registry`), `docker stack deploy`, then
    wait until every service runs its healthy tasks and every migration job completed; meanwhile, a job
    on the stack's private network provisions the apps' database roles on the primary."""
    from deploystack.engine import client, images, provision, swarm

    address = client.engine_address()
    docker_client = client.connect(address)
    registry = load_stack(target.spec).swarm.registry
    # With a registry, a remote swarm's images are built and pushed here; without one they must be on
    # the nodes, so they are built on the engine that deploys (docs/swarm.md).
    builds_at = client.build_engine(address) if registry else address
    builder = docker_client if builds_at == address else client.connect(builds_at)
    with project_lock(target.output):
        rendered, exported = _swarm_generated(target, None, ca_bundle, report)
        wanted = {rendered.images[s.name] for s in exported.plan.services}  # no CDC image on a swarm
        if builds_at != address:
            report.step(f"building on {builds_at}, deploying to {address}")
        images.ensure_base_images(builder, rendered, report)
        images.build_images(builder, dataclasses.replace(
            rendered, builds=tuple(b for b in rendered.builds if b.image in wanted)), report)
        if registry:
            swarm.push_images(builder, sorted(wanted), registry, report)
        # The apps' roles: a job on the private network, started once the stack is made (it reaches the
        # primary on any node); the migrations and apps retry until it has run.
        provisioner = None
        if exported.plan.tenancy is not None:
            provisioner = provision.SwarmProvisioner(docker_client, exported.plan, rendered.secrets, report)
        swarm.deploy(docker_client, exported, report, registry=bool(registry), alongside=provisioner)
        if provisioner is not None:
            provisioner.join(timeout=60)
            provisioner.check()
        return exported


def _converge(docker_client: DockerClient, rendered: Rendered, report: Reporter, partial: bool = False) -> Outcome:
    """`partial`: the plan is a subset; services outside it are left as they are."""
    from deploystack.engine import apply, db, images
    from deploystack.plan.dbc import wanted_slots

    if not partial:  # scale, deploy: the same refusal as up's
        refuse_pending_upgrade(docker_client, rendered.plan.project,
                                DB_ROUTER in {s.name for s in rendered.plan.services})
    images.require_registry_images(docker_client, rendered, report)
    images.ensure_base_images(docker_client, rendered, report)
    images.build_images(docker_client, rendered, report)
    outcome = apply.Converger(docker_client, rendered, report).up(partial=partial)
    if "db-primary" in {s.name for s in rendered.plan.services}:  # not a subset without the database
        replicas, slots = wanted_slots(rendered.plan)
        db.drop_stale_slots(docker_client, rendered.plan.project, slots, report)
        db.remove_stale_replica_volumes(docker_client, rendered.plan.project, replicas, report)
    if DB_ROUTER in {s.name for s in rendered.plan.services}:  # dbc.ha: patroni, whole plan
        nodes = [s.name for s in rendered.plan.services if s.name.startswith(NODE_PREFIX)]
        db.remove_stale_replica_volumes(docker_client, rendered.plan.project, nodes, report, prefix=NODE_PREFIX)
    return outcome


def refuse_pending_upgrade(docker_client: DockerClient, project: str, patroni: bool) -> None:
    """`ha: patroni` on a stack whose data is still on its PostgreSQL 15 volume: never an empty cluster
    beside it; `db upgrade` moves the data."""
    from deploystack.engine import upgrade
    from deploystack.plan.upgrade import pending_message

    if patroni and upgrade.pending(docker_client, project):
        raise UsageError(pending_message(project))


def _generated(target: Target, ca_bundle: Path | None, report: Reporter | None = None,
               stack: Stack | None = None) -> Rendered:
    """The rendered project, written to the output first when it differs (generate if stale).

    The caller holds the project lock.
    """
    rendered = render(target, ca_bundle, stack)
    write_rendered(rendered, report)
    return rendered


def write_rendered(rendered: Rendered, report: Reporter | None = None) -> None:
    """Write what differs between `rendered` and the output on disk (the caller holds the lock)."""
    changes = writer.compare(rendered.files, rendered.output)
    if changes.any:
        if report is not None:
            report.step(f"generating {rendered.output} ({len(changes.created)} new, "
                        f"{len(changes.changed)} changed, {len(changes.removed)} removed files)")
        writer.write(rendered.files, rendered.output, changes)


def write_text_atomically(path: Path, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Replace `path` (keeping its mode when it exists) so that a reader sees the old or the new file."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    writer.replace_file(path, FileData(data, mode))


def project_name(target: Target) -> str:
    return load_stack(target.spec).project


def down(target: Target, report: Reporter, volumes: bool, swarm: bool = False) -> None:
    from deploystack.engine import client, status

    project = project_name(target)
    docker_client = client.connect()
    with project_lock(target.output):
        if swarm:
            from deploystack.engine import swarm as engine_swarm

            engine_swarm.down(docker_client, project, volumes, report)
        else:
            status.down(docker_client, project, volumes, report)


def prune(target: Target, report: Reporter, ca_bundle: Path | None = None,
          dry_run: bool = False) -> list[tuple[str, int]]:
    """Images no container was made from and this spec does not want now: older tags of the role images
    (shared by every project on the engine) and of this project's apps. Returns (tag, size) of each
    removed (or, dry run, removable) one."""
    from deploystack.engine import client, images

    docker_client = client.connect()
    with project_lock(target.output):
        rendered = render(target, ca_bundle)
        stale = images.stale_images(docker_client, images.wanted_images(rendered),
                                    (images.ROLE_REPOSITORY, f"{rendered.plan.project}/"))
        if dry_run:
            return stale
        removed = set(images.remove_images(docker_client, [tag for tag, _ in stale], report))
        return [(tag, size) for tag, size in stale if tag in removed]


def remove_project_images(project: str, report: Reporter) -> None:
    from deploystack.engine import client, images

    images.remove_project_images(client.connect(), project, report)


def starter_spec() -> str:
    from deploystack.resources import blueprints_root

    return (blueprints_root() / "starter.yaml").read_text(encoding="utf-8")


def write_starter(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UsageError(f"{path} exists; use --force to overwrite it")
    path.write_text(starter_spec(), encoding="utf-8")


def stack_of(target: Target) -> Stack:
    return load_stack(target.spec)


def app_env(target: Target, app: str, show: bool) -> list[EnvRow]:
    """What `deploystack env APP` lists: the app's variables, each with its source, secrets masked unless
    `show`. Reads the host environment and env files like generate (a missing one is exit 2), writes nothing."""
    from deploystack.envlist import env_rows
    from deploystack.plan import build_plan
    from deploystack.render.envfile import read_env
    from deploystack.render.project import env_file_names
    from deploystack.spec.appenv import resolve_app_env

    stack = stack_of(target)
    check_output_project(target.output, stack.project)
    resolved = resolve_app_env(stack, target.spec, os.environ)
    plan = build_plan(stack, env_files=env_file_names(resolved))
    return env_rows(stack, plan, app, resolved, read_env(target.output / ENV_FILE), show)


def media_usage(target: Target) -> int:
    from deploystack.engine import client, media

    return media.usage_bytes(client.connect(), project_name(target))


def media_backup(target: Target, folder: Path, keep: int, report: Reporter) -> Path:
    from deploystack.engine import client, media

    if keep < 1:
        raise UsageError("--keep must be at least 1")
    docker_client = client.connect()
    with project_lock(target.output):
        return media.backup(docker_client, project_name(target), folder, keep, report)


def media_restore(target: Target, path: Path, report: Reporter) -> Path:
    """Restore `path` (a backup, or a folder: its newest backup of this project); what the store held
    before is backed up next to it first, so a restore loses nothing."""
    from deploystack.engine import client, media
    from deploystack.plan import build_plan

    stack = stack_of(target)
    if not stack.mmc.enabled or stack.mmc.backend != "seaweedfs":
        raise UsageError("media restore works on the SeaweedFS media store (mmc.backend: seaweedfs)")
    require_generated(target, stack.project)
    archive = path
    if path.is_dir():
        found = sorted(path.glob(f"{media.backup_prefix(stack.project)}*.tar.gz"))
        if not found:
            raise UsageError(f"no media backup of project {stack.project} in {path}")
        archive = found[-1]
    if not archive.is_file():
        raise UsageError(f"{archive}: no such backup file")
    archive = archive.resolve()
    docker_client = client.connect()
    with project_lock(target.output):
        media.backup(docker_client, stack.project, archive.parent, keep=10**6, report=report,
                     suffix="-before-restore")
        media.restore(docker_client, stack.project, archive, build_plan(stack).service("media"), report)
    return archive


if TYPE_CHECKING:
    from deploystack.engine.db import Status as DbStatus


def db_status(target: Target) -> DbStatus:
    """Each database node's role, LSN, replication lag and slot, from the nodes themselves."""
    from deploystack.engine import client, db
    from deploystack.plan.dbc import PRIMARY, offsite_role, replica_names

    stack = stack_of(target)
    offsite = offsite_role(stack.dbc.offsite) if stack.dbc.offsite else None
    return db.status(client.connect(), stack.project, [PRIMARY, *replica_names(stack)], offsite)


def app_database(stack: Stack, app: str | None) -> AppDatabase:
    """App `app`'s database role and database (default: the spec's first app's); UsageError if no such app."""
    from deploystack.plan.tenancy import app_databases

    databases = {d.app: d for d in app_databases(stack)}
    if app is not None and app not in databases:
        raise UsageError(f"--app {app}: no such app in {stack.project} (apps: {', '.join(databases)})")
    return databases[app] if app is not None else next(iter(databases.values()))


def db_backup(target: Target, folder: Path, keep: int, physical: bool, report: Reporter,
              app: str | None = None) -> Path:
    """pg_dump (custom format) of an app's database, or with `physical` a pg_basebackup tarball of the
    whole cluster, into `folder`; then only the `keep` newest of that kind stay."""
    from deploystack.engine import client, db

    if keep < 1:
        raise UsageError("--keep must be at least 1")
    stack = stack_of(target)
    docker_client = client.connect()
    with project_lock(target.output):
        database = app_database(stack, app).database
        return db.backup(docker_client, stack.project, database, folder, keep, report, physical)


def db_restore(target: Target, path: Path, report: Reporter, app: str | None = None) -> Path:
    """Restore a pg_dump custom-format backup (or a folder's newest one of this project) into an app's
    database on the primary; the database is backed up next to it first, so a restore loses nothing."""
    from deploystack.engine import client, db

    stack = stack_of(target)
    database = app_database(stack, app)
    require_generated(target, stack.project)
    dump = path
    if path.is_dir():
        found = db.backups_of((p.name for p in path.iterdir()), stack.project, physical=False)
        if not found:
            raise UsageError(f"no database dump of project {stack.project} in {path}")
        dump = path / found[-1]
    if not dump.is_file():
        raise UsageError(f"{dump}: no such backup file")
    dump = dump.resolve()
    db.check_dump(dump)
    docker_client = client.connect()
    with project_lock(target.output):
        db.backup(docker_client, stack.project, database.database, dump.parent, keep=10**6, report=report,
                  suffix="-before-restore")
        db.restore(docker_client, stack.project, database.database, database.owner, dump, report)
    return dump


def db_promote(target: Target, replica: str, force: bool, report: Reporter) -> str:
    """Promote `replica` when the primary is lost: its data becomes db-primary's, every replica re-clones,
    and the database services are brought back up (names unchanged, so apps just reconnect). Returns the
    volume that keeps the old primary's data."""
    from deploystack.engine import client, failover
    from deploystack.plan.dbc import PRIMARY, replica_names

    if stack_of(target).dbc.ha == "patroni":
        raise UsageError("dbc.ha is patroni: Patroni promotes a standby by itself when the leader is lost; "
                         "`deploystack db switchover --to NODE` moves the leader by hand")
    require_generated(target, stack_of(target).project)
    docker_client = client.connect()
    with project_lock(target.output):
        rendered = _generated(target, None, report)
        replicas = replica_names(stack_of(target))
        kept = failover.promote(docker_client, rendered.plan.project, replica, replicas, force, report)
        database = dataclasses.replace(rendered, plan=subset(rendered.plan, [PRIMARY, *replicas]))
        _converge(docker_client, database, report, partial=True)
    return kept


def db_cluster(target: Target) -> ClusterStatus | None:
    """Patroni's view of the nodes (leader, lag, timeline) when dbc.ha is patroni; else (also while the data
    still waits for `db upgrade` on PostgreSQL 15) None."""
    from deploystack.engine import client, patroni, upgrade
    from deploystack.plan.patroni import enabled, node_names

    stack = stack_of(target)
    docker_client = client.connect()
    if not enabled(stack) or upgrade.pending(docker_client, stack.project):
        return None
    return patroni.status(docker_client, stack.project, node_names(stack))


def db_switchover(target: Target, to: str | None, report: Reporter) -> str:
    """Patroni's switchover to `to` (or the standby Patroni picks); returns the new leader."""
    from deploystack.engine import client, patroni
    from deploystack.plan.patroni import enabled, node_names

    stack = stack_of(target)
    if not enabled(stack):
        raise UsageError("db switchover needs dbc.ha: patroni (streaming replicas: `db promote` when the "
                         "primary is lost)")
    with project_lock(target.output):
        return patroni.change_leader(client.connect(), stack.project, node_names(stack), to, False, report)


def _upgrade_pair(target: Target, ca_bundle: Path | None = None) -> tuple[Stack, Rendered, Rendered]:
    """(the spec; the stack as it runs, on PostgreSQL 15; the stack as the spec has it, on Patroni)."""
    from deploystack.plan.patroni import enabled

    stack = load_stack(target.spec)
    if not enabled(stack):
        raise UsageError("db upgrade moves a stack to Patroni and PostgreSQL 17: set `ha: patroni` under dbc "
                         "in the spec first")
    require_generated(target, stack.project)
    old_dbc = stack.dbc.model_copy(update={"ha": "streaming", "synchronous": False})
    old = render(target, ca_bundle, stack.model_copy(update={"dbc": old_dbc}))
    return stack, old, render(target, ca_bundle, stack)


def db_upgrade_steps(target: Target) -> list[str]:
    """What `db upgrade` would do (nothing is changed)."""
    from deploystack.engine import client, upgrade
    from deploystack.plan import upgrade as plan_upgrade

    stack, old, _ = _upgrade_pair(target)
    docker_client = client.connect()
    if not upgrade.pending(docker_client, stack.project):
        raise UsageError(plan_upgrade.nothing_message(stack.project))
    writers = [c.name or "" for c in upgrade.writers(docker_client, old)]
    return plan_upgrade.steps(stack, writers, plan_upgrade.old_services(stack),
                              str(upgrade_folder(target, "<UTC time>")))


def upgrade_folder(target: Target, stamp: str) -> Path:
    return target.output.resolve() / STATE_DIR / f"db-upgrade-{stamp}"


def db_upgrade(target: Target, report: Reporter, ca_bundle: Path | None = None) -> Result:
    """Move a PostgreSQL 15 stack to Patroni + PostgreSQL 17 by dump and restore (engine/upgrade.py)."""
    from deploystack.dbparse import timestamp
    from deploystack.engine import client, upgrade

    docker_client = client.connect()
    with project_lock(target.output):
        _, old, new = _upgrade_pair(target, ca_bundle)

        def converge(rendered: Rendered, partial: bool) -> object:
            return _converge(docker_client, rendered, report, partial=partial)

        return upgrade.upgrade(docker_client, old, new, upgrade_folder(target, timestamp()), converge,
                               lambda rendered: write_rendered(rendered, report), report)


def export_replica(target: Target, folder: Path, ca_bundle: Path | None = None) -> writer.Changes:
    """Write the offsite replica's folder (render/offsite.py) into `folder`.

    The stack's output is generated first when stale: the password and CA in the folder must be the ones
    the primary gets at its next `up`, and they are made (once) by that generation.
    """
    from deploystack.render.offsite import BUNDLE_MARK, replica_bundle

    stack = load_stack(target.spec)
    if stack.dbc.offsite is None:
        raise UsageError(f"{target.spec}: dbc.offsite is not declared; declare the offsite replica there first "
                         "(see docs/db.md), then deploystack up")
    folder = folder.resolve()
    if folder.is_dir() and any(folder.iterdir()) and not (folder / BUNDLE_MARK).is_file():
        raise UsageError(f"--output {folder}: the folder is not empty and holds no earlier export; "
                         "choose an empty or new folder")
    with project_lock(target.output):
        rendered = _generated(target, ca_bundle)
    files = replica_bundle(stack, rendered)
    changes = writer.compare(files, folder)
    writer.write(files, folder, changes)
    return changes


def run_oneoff(target: Target, app: str, command: list[str], env: dict[str, str]) -> int:
    """`command` in a new one-off container of `app` (its image, environment and networks, `env` on top),
    attached to this terminal, then removed; its exit code."""
    from deploystack.engine import client, oneoff

    stack = stack_of(target)
    if app not in stack.apc.apps:
        raise UsageError(f"no app {app!r} in {target.spec}; apps: {', '.join(stack.apc.apps)}")
    require_generated(target, stack.project)  # the secrets must be the running stack's
    return oneoff.run(client.connect(), render(target, stack=stack), app, command, env)


def exec_service(target: Target, service: str, number: int, command: list[str]) -> int:
    """`command` in the running container `number` of `service`, attached to this terminal; its exit code."""
    return _exec(stack_of(target), service, number, command)


def db_shell(target: Target, arguments: list[str], app: str | None = None) -> int:
    """psql on the primary (on Patroni, the leader), as an app's database role on its database; `arguments`
    go to psql."""
    from deploystack import labels
    from deploystack.engine import client
    from deploystack.engine.provision import database_leader

    stack = stack_of(target)
    database = app_database(stack, app)
    # postgres over the local socket (no password), with the app's role and rights from the start.
    psql = ["env", f"PGOPTIONS=-c role={database.role}", "psql", "-h", "/run/postgresql",
            "-U", "postgres", "-d", database.database, *arguments]
    leader = database_leader(client.connect(), stack.project)
    return _exec(stack, leader.labels[labels.SERVICE], int(leader.labels.get(labels.NUMBER, "1")), psql)


def _exec(stack: Stack, service: str, number: int, command: list[str]) -> int:
    from deploystack.engine import client, oneoff
    from deploystack.plan import build_plan

    names = [s.name for s in build_plan(stack).services]
    return oneoff.exec_in(client.connect(), stack.project, service, number, command, names)


# -- pgBackRest (dbc.backups on dbc.ha: patroni) -------------------------------------------------------


def _backups_stack(target: Target, command: str) -> Stack:
    from deploystack.plan.backups import enabled

    stack = stack_of(target)
    if not enabled(stack):
        raise UsageError(f"db {command} needs dbc.backups (with dbc.ha: patroni) in {target.spec}; "
                         "`db backup DIR` / `db restore DIR` make and restore pg_dump files on any stack")
    return stack


def backup_repository(stack: Stack) -> tuple[str, bool]:
    """Where the repository is, said plainly, and whether it is off this host."""
    from deploystack.plan.backups import local_store
    from deploystack.spec.models import BACKUP_BUCKET

    backups = stack.dbc.backups
    assert backups is not None
    if local_store(stack) or backups.target is None:
        return (f"s3://{BACKUP_BUCKET}/{stack.project} on the stack's own media store "
                "(same host, not a disaster copy)"), False
    return f"s3://{backups.target.bucket}/{stack.project} at {backups.target.endpoint} (off-host)", True


def db_archiver(target: Target) -> dict[str, object] | None:
    """dbc.backups: the leader's pg_stat_archiver as data for `db status` (None without dbc.backups)."""
    from deploystack.engine import backups, client
    from deploystack.plan.backups import enabled

    stack = stack_of(target)
    if not enabled(stack):
        return None
    found, error = backups.archiver(client.connect(), stack.project)
    if found is None:
        return {"error": error}
    return found.as_dict()


def db_backups(target: Target) -> BackupsReport:
    """The repository's backups, the recoverable window, the archiver's and the scheduler's state."""
    from deploystack.engine import backups, client

    stack = _backups_stack(target, "backups")
    repository, off_host = backup_repository(stack)
    return backups.report(client.connect(), stack.project, repository, off_host)


def db_pitr_restore(target: Target, kind: str, value: str, report: Reporter) -> None:
    """Restore the running stack's database from the repository: `kind` time (value: a timestamp, UTC when
    it names no zone), latest, or backup (value: a label)."""
    from deploystack.backupinfo import restore_time
    from deploystack.engine import backups, client
    from deploystack.plan.patroni import node_names

    stack = _backups_stack(target, "restore --time/--latest/--backup")
    value = restore_time(value) if kind == "time" else value
    require_generated(target, stack.project)
    with project_lock(target.output):
        rendered = render(target, stack=stack)
        backups.restore(client.connect(), rendered, node_names(stack), kind, value, report)


def db_verify(target: Target, label: str | None, report: Reporter) -> tuple[bool, str]:
    """Restore a backup (default: the newest) into a throwaway container and check it."""
    from deploystack.engine import backups, client
    from deploystack.plan.patroni import node_names

    stack = _backups_stack(target, "verify")
    require_generated(target, stack.project)
    return backups.verify(client.connect(), render(target, stack=stack), node_names(stack), label, report)
