"""Checks for spec values that are printed into config files (nginx, fail2ban, PostgreSQL, Redis...).

Every such value is held to a pattern of characters that mean nothing to the file it lands in (no
whitespace, quotes, `;`, braces or newlines) and to bounds a real deployment stays within, so that a
typo or a pasted line can never add a directive. The functions raise ValueError with the message the
loader prints after `field.path (line N):`.
"""

from __future__ import annotations

import ipaddress
import re

# A DNS name (labels of letters, digits and '-') or an IPv4 address: what a client or the other host dials.
HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# A route: a path prefix nginx prints as `location <route> {`; only plain path characters.
ROUTE = re.compile(r"^/(?:[A-Za-z0-9._~/-]*/)?$")  # "/" or "/api/", "/shop/v2/"
# An image reference as Docker takes it: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?/)?"
                   r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
                   r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")
# A RabbitMQ user or vhost: it is also part of the amqp:// URL the apps get.
AMQP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# `$$` (a literal dollar) or a `${NAME}` reference, the one syntax of the spec's env values, the plan's
# environment (`${SECRET}` from the output's .env) and compose.yaml: one pattern for everything that
# reads, fills or escapes them (spec/models.py, envlist.py, engine/containers.py, render/swarm.py).
REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A Python module path (celery -A, DJANGO_SETTINGS_MODULE).
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")

KIB, MIB, GIB = 1024, 1024**2, 1024**3
# nginx sizes (client_max_body_size): bytes, or k, m, g.
NGINX_SIZE = ({"": 1, "k": KIB, "m": MIB, "g": GIB}, "e.g. 10m")
# Container memory limits as Compose writes them.
MEMORY = ({"k": KIB, "m": MIB, "g": GIB}, "e.g. 512m or 1g")
# PostgreSQL memory settings: its units are case-sensitive (kB, MB, GB).
PG_SIZE = ({"kB": KIB, "MB": MIB, "GB": GIB}, "e.g. 128MB")
# Redis's maxmemory.
REDIS_SIZE = ({"kb": KIB, "mb": MIB, "gb": GIB}, "e.g. 256mb")


def size(value: str, kind: tuple[dict[str, int], str], low: int, high: int) -> str:
    """A number and one of `kind`'s units, between `low` and `high` bytes."""
    units, example = kind
    match = re.fullmatch(r"([0-9]{1,15})([A-Za-z]{0,2})", value)
    if match is None or match.group(2) not in units:
        spelled = ", ".join(repr(u) for u in units if u)
        raise ValueError(f"{value!r} is not a size: a number and a unit ({spelled}), {example}")
    number = int(match.group(1)) * units[match.group(2)]
    if not low <= number <= high:
        raise ValueError(f"{value!r} is out of range: between {_human(low)} and {_human(high)}")
    return value


def _human(number: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if number >= factor and number % factor == 0:
            return f"{number // factor} {unit}"
    return f"{number} bytes"


def host_name(value: str) -> str:
    if not HOST_NAME.match(value):
        raise ValueError(f"{value!r} is not a host name (letters, digits, '-' and '.', e.g. shop.example.org)")
    return value


# Python accepts any text after an IPv6 address's '%' (its scope id): 'fe80::1%x;}' is an address to it.
def _no_scope(value: str) -> str:
    if "%" in value:
        raise ValueError("an IPv6 scope id ('%...')")
    return value


def ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(_no_scope(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0 or ::1)") from None
    return value


def ip_networks(entries: list[str]) -> list[str]:
    for entry in entries:
        try:
            ipaddress.ip_network(_no_scope(entry), strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 203.0.113.7 or 10.0.0.0/8)") from None
    return entries


def image(value: str) -> str:
    if not IMAGE.match(value):
        raise ValueError(f"{value!r} is not an image reference (e.g. registry.example.org/team/name:1.2)")
    return value


def amqp_name(value: str) -> str:
    if not AMQP_NAME.match(value):
        raise ValueError(f"{value!r} must be 1 to 64 letters, digits, '_', '.' or '-'")
    return value


def module(value: str | None) -> str | None:
    if value is not None and not MODULE.match(value):
        raise ValueError(f"{value!r} is not a Python module path (e.g. shop.settings)")
    return value
