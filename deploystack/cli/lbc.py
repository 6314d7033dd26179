"""`deploystack lbc ...`: the load balancer's fail2ban bans. Parse, call, print; Docker stays in engine/."""

from typing import Annotated

import typer

from deploystack import console
from deploystack.cli.options import JsonOpt, SpecOpt
from deploystack.target import Target

lbc_app = typer.Typer(
    name="lbc",
    help="The load balancer: fail2ban's bans (list, lift).",
    no_args_is_help=True,
)


@lbc_app.command()
def bans(
    file: SpecOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Banned client addresses, per fail2ban jail."""
    from deploystack.engine import client, lbc
    from deploystack.operations import Session

    project = Session(Target.of(file, None)).stack.project
    jails = lbc.bans(client.connect(), project)
    if as_json:
        console.as_json({jail: [ban.as_dict() for ban in held] for jail, held in jails.items()})
        return
    rows = [(b.jail, b.address, b.banned_at, b.expires_at) for held in jails.values() for b in held]
    if not rows:
        console.say(f"no bans in project {project} (jails: {', '.join(jails) or 'none'})")
        return
    console.table(f"bans in project {project}", ["jail", "address", "banned at (UTC)", "expires at (UTC)"], rows)


@lbc_app.command()
def unban(
    address: Annotated[str, typer.Argument(help="the banned IP address")],
    file: SpecOpt = None,
) -> None:
    """Lift the ban on ADDRESS in every jail that holds it."""
    from deploystack.engine import client, lbc
    from deploystack.operations import Session

    project = Session(Target.of(file, None)).stack.project
    jails = lbc.unban(client.connect(), project, address)
    console.say(f"unbanned {address} ({', '.join(jails)})")
