"""`deploystack run/manage/exec`: a command in a new one-off container of an app, or in a running one."""

from __future__ import annotations

from deploystack.errors import UsageError
from deploystack.operations.session import Session


def run_oneoff(session: Session, app: str, command: list[str], env: dict[str, str]) -> int:
    """`command` in a new one-off container of `app` (its image, environment and networks, `env` on top),
    attached to this terminal, then removed; its exit code."""
    from deploystack.engine import oneoff

    stack = session.stack
    if app not in stack.apc.apps:
        raise UsageError(f"no app {app!r} in {session.spec}; apps: {', '.join(stack.apc.apps)}")
    session.require_generated()  # the secrets must be the running stack's
    return oneoff.run(session.client, session.rendered, app, command, env)


def exec_in(session: Session, service: str, number: int, command: list[str]) -> int:
    """`command` in the running container `number` of `service`, attached to this terminal; its exit code."""
    from deploystack.engine import oneoff
    from deploystack.plan import build_plan

    names = [s.name for s in build_plan(session.stack).services]
    return oneoff.exec_in(session.client, session.stack.project, service, number, command, names)
