"""The stack on a Docker Swarm: `export swarm` and `up --engine swarm` (docs/swarm.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deploystack.errors import UsageError
from deploystack.operations.output import write_rendered, write_swarm
from deploystack.operations.session import Session
from deploystack.render.project import Rendered, SwarmRendered, render_swarm


def export_swarm(session: Session, stack_file: Path | None = None, report: bool = False) -> SwarmRendered:
    """Write the stack file for `docker stack deploy` (default <output>/swarm/stack.yaml) and the config
    and secret files it names (under <output>/swarm/); the Compose output is brought up to date too, as
    its build contexts make the images and its .env keeps the secrets. `report`: say what is generated."""
    with session.lock():
        return _swarm_generated(session, stack_file, report)[1]


def _swarm_generated(session: Session, stack_file: Path | None, report: bool) -> tuple[Rendered, SwarmRendered]:
    rendered = session.rendered
    swarm = render_swarm(session.stack, session.spec, rendered, stack_file)  # all in memory first
    write_rendered(rendered, session.report if report else None)
    write_swarm(swarm)
    return rendered, swarm


def up_swarm(session: Session) -> SwarmRendered:
    """Export, build what is missing (and push it with `swarm.registry`), `docker stack deploy`, then
    wait until every service runs its healthy tasks and every migration job completed; meanwhile, a job
    on the stack's private network provisions the apps' database roles on the primary."""
    from deploystack.engine import client, images, provision, swarm

    report = session.report
    address = client.engine_address()
    docker_client = client.connect(address)
    session.client = docker_client  # the session's engine is the one that deploys
    registry = session.stack.swarm.registry
    # With a registry, a remote swarm's images are built and pushed here; without one they must be on
    # the nodes, so they are built on the engine that deploys (docs/swarm.md).
    builds_at = client.build_engine(address) if registry else address
    builder = docker_client if builds_at == address else client.connect(builds_at)
    with session.lock():
        _refuse_pending_upgrade(session)  # before anything is written or built
        rendered, exported = _swarm_generated(session, None, True)
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


def _refuse_pending_upgrade(session: Session) -> None:
    """`ha: patroni` for a swarm stack that runs PostgreSQL 15: its data is in the db-primary service's volume,
    on the node labelled for it, and an empty cluster must not start beside it (as on Compose: Session)."""
    from deploystack.engine import swarm
    from deploystack.plan import patroni
    from deploystack.plan.names import PRIMARY
    from deploystack.plan.upgrade import swarm_pending_message

    stack = session.stack
    if patroni.enabled(stack) and PRIMARY in swarm.stack_services(session.client, stack.project):
        raise UsageError(swarm_pending_message(stack.project))
