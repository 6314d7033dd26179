"""The whole stack's commands on one engine: generate, build, up, scale, down, prune, env."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from deploystack.errors import UsageError
from deploystack.operations.output import write_text_atomically
from deploystack.operations.session import Session
from deploystack.plan.project import subset
from deploystack.render import writer
from deploystack.render.project import ENV_FILE, check_output_project

if TYPE_CHECKING:
    from deploystack.engine.apply import Outcome
    from deploystack.engine.report import Reporter
    from deploystack.envlist import EnvRow


def generate(session: Session, dry_run: bool = False) -> writer.Changes:
    """Render everything in memory, then write what differs (nothing at all with dry_run)."""
    rendered = session.rendered
    changes = writer.compare(rendered.files, rendered.output)
    if not dry_run:
        with session.lock():
            writer.write(rendered.files, rendered.output, changes)
    return changes


def build(session: Session, force: bool = False) -> list[str]:
    from deploystack.engine import images

    docker_client = session.client
    with session.lock():
        rendered = session.generated()
        images.ensure_base_images(docker_client, rendered, session.report)
        return images.build_images(docker_client, rendered, session.report, force=force)


def up(session: Session, services: list[str] | None = None) -> Outcome:
    """Generate if stale, build what is missing, converge; registry-only images are checked first.

    `services`: only these and what they depend on (deploystack.testing uses it).
    """
    session.connect()
    with session.lock():
        stack = session.stack
        session.refuse_pending_upgrade(stack.project, stack.dbc.ha == "patroni")  # before writing
        rendered = session.generated(session.report)
        if services:
            rendered = dataclasses.replace(rendered, plan=subset(rendered.plan, services))
        return session.converge(rendered, partial=bool(services))


def scale(session: Session, args: list[str], swarm: bool = False) -> dict[str, int]:
    """Set replica counts in the spec (comments kept), then converge: new replicas are healthy before
    the LBC reloads with them; leaving ones leave the LBC first, drain, then stop. With `swarm`, a
    service scale of each app: the LBC finds tasks through Docker's DNS, so nothing is regenerated for it.

    The spec file changes only once the edited spec is valid and renders; if converging then fails,
    the spec says what was asked and `deploystack up` carries on from there.
    """
    from deploystack.engine import swarm as engine_swarm
    from deploystack.operations.output import write_swarm
    from deploystack.render.project import render_swarm
    from deploystack.spec.edit import parse_scale_args, set_replicas
    from deploystack.spec.loader import read_text, validate_text

    docker_client, report = session.client, session.report
    if swarm:
        engine_swarm.require_manager(docker_client)
    with session.lock():
        text = read_text(session.spec)
        stack = validate_text(text, session.spec)
        workers = [name for name, app in stack.apc.apps.items() if app.worker is not None]
        replicas = parse_scale_args(args, list(stack.apc.apps), workers)
        new_text = set_replicas(text, replicas)
        new_stack = validate_text(new_text, session.spec)
        rendered = session.render(new_stack, fetch=False)
        write_text_atomically(session.spec, new_text)
        changes = writer.compare(rendered.files, rendered.output)
        writer.write(rendered.files, rendered.output, changes)
        report.step("spec updated: " + ", ".join(f"{app}={n}" for app, n in replicas.items()))
        if swarm:
            exported = render_swarm(new_stack, session.spec, rendered)
            write_swarm(exported)  # the stack file says the new counts too
            if "dbc" in replicas:  # database replicas are services of their own: a deploy adds or prunes them
                engine_swarm.deploy(docker_client, exported, report, registry=bool(new_stack.swarm.registry))
                engine_swarm.remove_gone_replicas(docker_client, exported.plan, rendered.secrets, report)
            apps = {name: count for name, count in replicas.items() if name != "dbc"}
            if apps:
                engine_swarm.scale(docker_client, new_stack.project, apps, report)
        else:
            session.converge(rendered)
        return replicas


def down(session: Session, volumes: bool, swarm: bool = False) -> None:
    from deploystack.engine import status

    project = session.stack.project
    docker_client = session.client
    with session.lock():
        if swarm:
            from deploystack.engine import swarm as engine_swarm

            engine_swarm.down(docker_client, project, volumes, session.report)
        else:
            status.down(docker_client, project, volumes, session.report)


def prune(session: Session, dry_run: bool = False) -> list[tuple[str, int]]:
    """Images no container was made from and this spec does not want now: older tags of the role images
    (shared by every project on the engine) and of this project's apps. Returns (tag, size) of each
    removed (or, dry run, removable) one."""
    from deploystack.engine import images

    docker_client = session.client
    with session.lock():
        rendered = session.rendered
        stale = images.stale_images(docker_client, images.wanted_images(rendered),
                                    (images.ROLE_REPOSITORY, f"{rendered.plan.project}/"))
        if dry_run:
            return stale
        removed = set(images.remove_images(docker_client, [tag for tag, _ in stale], session.report))
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


def app_env(session: Session, app: str, show: bool) -> list[EnvRow]:
    """What `deploystack env APP` lists: the app's variables, each with its source, secrets masked unless
    `show`. Reads the host environment and env files like generate (a missing one is exit 2), writes nothing."""
    from deploystack.envlist import env_rows
    from deploystack.plan import build_plan
    from deploystack.render.envfile import read_env
    from deploystack.render.project import env_file_names
    from deploystack.spec.appenv import resolve_app_env

    stack = session.stack
    check_output_project(session.output, stack.project)
    resolved = resolve_app_env(stack, session.spec, os.environ)
    plan = build_plan(stack, env_files=env_file_names(resolved))
    return env_rows(stack, plan, app, resolved, read_env(session.output / ENV_FILE), show)
