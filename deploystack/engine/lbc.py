"""fail2ban in the project's LBC container: list bans, lift one.

Everything runs inside the running `lbc` container through `docker exec`: `lbc-bans` (a script in the
image, compose/lbc/lbc-bans) prints the jails and bans, `fail2ban-client unban` lifts a ban.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass

import docker
import docker.models.containers

from deploystack.engine.client import engine_errors
from deploystack.engine.lookup import service_container
from deploystack.errors import StackError, UsageError

SERVICE = "lbc"
FAIL2BAN_OFF = 3  # lbc-bans' exit status when the rendered configuration has no jail.local


@dataclass(frozen=True)
class Ban:
    jail: str
    address: str
    banned_at: str  # the container's clock (UTC), YYYY-MM-DD HH:MM:SS
    expires_at: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def lbc_container(client: docker.DockerClient, project: str) -> docker.models.containers.Container:
    """The project's running LBC."""
    return service_container(client, project, SERVICE, running=True)


def _exec(container: docker.models.containers.Container, command: list[str]) -> tuple[int, str]:
    with engine_errors(f"running {command[0]} in {container.name}"):
        code, output = container.exec_run(command, demux=False)
    return code, (output or b"").decode(errors="replace").strip()


def bans(client: docker.DockerClient, project: str) -> dict[str, list[Ban]]:
    """Every jail (also those with no ban), with its bans."""
    container = lbc_container(client, project)
    code, output = _exec(container, ["lbc-bans"])
    if code == FAIL2BAN_OFF:
        raise UsageError(f"fail2ban is off in project {project}'s LBC (lbc.fail2ban.enabled: false in the spec)")
    if code != 0:
        raise StackError(f"fail2ban in {container.name} does not answer: {output or f'exit status {code}'}")
    return parse_bans(output)


def parse_bans(output: str) -> dict[str, list[Ban]]:
    """lbc-bans' lines (`jail NAME`, `ban JAIL ADDRESS BANNED-AT EXPIRES-AT`, tab-separated)."""
    jails: dict[str, list[Ban]] = {}
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "jail" and len(fields) == 2:
            jails.setdefault(fields[1], [])
        elif fields[0] == "ban" and len(fields) == 5:
            jails.setdefault(fields[1], []).append(Ban(*fields[1:]))
    return jails


def unban(client: docker.DockerClient, project: str, address: str) -> list[str]:
    """Lift the ban on `address` in every jail that holds it; the names of those jails."""
    try:
        ip = str(ipaddress.ip_address(address))
    except ValueError:
        raise UsageError(f"{address!r} is not an IP address") from None
    jails = [jail for jail, held in bans(client, project).items() if any(b.address == ip for b in held)]
    if not jails:
        raise UsageError(f"{ip} is not banned in project {project} (deploystack lbc bans lists the bans)")
    container = lbc_container(client, project)
    code, output = _exec(container, ["fail2ban-client", "unban", ip])
    if code != 0:
        raise StackError(f"fail2ban in {container.name} did not lift the ban on {ip}: {output}")
    return jails
