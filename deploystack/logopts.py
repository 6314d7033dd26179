"""What `deploystack logs --since/--tail` accept, as `docker compose logs` does. Pure."""

from __future__ import annotations

import re
from datetime import datetime

from deploystack.errors import UsageError

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT = r"(?:ns|us|µs|ms|s|m|h)"
_DURATION = re.compile(rf"(?:{_NUMBER}{_UNIT})+")  # Go's time.ParseDuration without a sign: 1h30m, 90s
_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_since(value: str, now: float) -> float:
    """`--since`: a duration before `now` (10m, 1h30m), an RFC 3339 time or a date (a time with no offset
    is local, as for the docker CLI) or UNIX seconds; as UNIX seconds."""
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if _DURATION.fullmatch(text):
        return now - sum(float(number) * _SECONDS[unit] for number, unit in _PART.findall(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {value!r}: give a duration (10m, 1h30m), a time (2026-12-01T19:00:00Z), "
                         "a date (2026-12-01) or UNIX seconds") from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


def parse_tail(value: str) -> int | str:
    """`--tail`: a number of lines per container, or `all`."""
    text = value.strip().lower()
    if text == "all":
        return "all"
    if not text.isdigit():
        raise UsageError(f"--tail {value!r}: give a number of lines or all")
    return int(text)
