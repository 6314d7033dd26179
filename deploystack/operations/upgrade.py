"""`deploystack db upgrade`: a PostgreSQL 15 stack moved to Patroni + PostgreSQL 17 (engine/upgrade.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deploystack.errors import UsageError
from deploystack.operations.lock import STATE_DIR
from deploystack.operations.output import write_rendered
from deploystack.operations.session import Session
from deploystack.render.project import Rendered
from deploystack.spec import Stack

if TYPE_CHECKING:
    from deploystack.engine.upgrade import Result


def _upgrade_pair(session: Session) -> tuple[Stack, Rendered, Rendered]:
    """(the spec; the stack as it runs, on PostgreSQL 15; the stack as the spec has it, on Patroni)."""
    from deploystack.plan.patroni import enabled

    stack = session.stack
    if not enabled(stack):
        raise UsageError("db upgrade moves a stack to Patroni and PostgreSQL 17: set `ha: patroni` under dbc "
                         "in the spec first")
    session.require_generated()
    old_dbc = stack.dbc.model_copy(update={"ha": "streaming", "synchronous": False})
    old = session.render(stack.model_copy(update={"dbc": old_dbc}))
    return stack, old, session.render()


def db_upgrade_steps(session: Session) -> list[str]:
    """What `db upgrade` would do (nothing is changed)."""
    from deploystack.engine import upgrade
    from deploystack.plan import upgrade as plan_upgrade

    stack, old, _ = _upgrade_pair(session)
    docker_client = session.client
    if not upgrade.pending(docker_client, stack.project):
        raise UsageError(plan_upgrade.nothing_message(stack.project))
    writers = [c.name or "" for c in upgrade.writers(docker_client, old)]
    return plan_upgrade.steps(stack, writers, plan_upgrade.old_services(stack),
                              str(upgrade_folder(session, "<UTC time>")))


def upgrade_folder(session: Session, stamp: str) -> Path:
    return session.output.resolve() / STATE_DIR / f"db-upgrade-{stamp}"


def db_upgrade(session: Session) -> Result:
    """Move a PostgreSQL 15 stack to Patroni + PostgreSQL 17 by dump and restore (engine/upgrade.py)."""
    from deploystack.dbparse import timestamp
    from deploystack.engine import upgrade

    docker_client = session.connect()
    with session.lock():
        _, old, new = _upgrade_pair(session)

        def converge(rendered: Rendered, partial: bool) -> object:
            return session.converge(rendered, partial=partial)

        return upgrade.upgrade(docker_client, old, new, upgrade_folder(session, timestamp()), converge,
                               lambda rendered: write_rendered(rendered, session.report), session.report)
