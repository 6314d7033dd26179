"""What a render keeps from the output folder it renders into, read once.

`read_output_state` is the one function that reads the output folder for a render (the existing `.env`,
the deploy history, the git checkouts' commits, the TLS material made once and kept); `render_project`
takes its `OutputState` and reads nothing of the output folder itself, so a test renders from a state it
builds, with no folder on disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from deploystack import history
from deploystack.gitsource import head
from deploystack.history import Deploy
from deploystack.plan import backups, dbc, patroni
from deploystack.render.envfile import read_env
from deploystack.spec.models import Stack

ENV_FILE = ".env"
OFFSITE_CA_CERT, OFFSITE_CA_KEY = "offsite/ca.crt", "offsite/ca.key"  # the offsite replica's CA (dbc.offsite)
# The certificates and keys made once and kept across renders (render/dbtls.py, render/backuptls.py).
TLS_FILES = (OFFSITE_CA_CERT, OFFSITE_CA_KEY, dbc.TLS_CERT, dbc.TLS_KEY, patroni.TLS_CERT, patroni.TLS_KEY,
             backups.CA_CERT, backups.CA_KEY, *backups.NODE_TLS[1:], *backups.BACKUP_TLS[1:])


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class OutputState:
    """The output folder as a render needs it; the empty state is a folder that holds nothing yet."""

    env: Mapping[str, str] = field(default_factory=_empty)  # the existing .env: generated secrets are kept
    history: tuple[Deploy, ...] = ()  # the deploy history: rollback pins, images kept for a rollback
    heads: Mapping[str, str] = field(default_factory=_empty)  # app -> the commit its git checkout holds
    tls: Mapping[str, bytes] = field(default_factory=_empty)  # TLS_FILES that exist, by path in the output

    @classmethod
    def of(cls, env: Mapping[str, str] | None = None, records: Iterable[Deploy] = (),
           heads: Mapping[str, str] | None = None, tls: Mapping[str, bytes] | None = None) -> OutputState:
        return cls(MappingProxyType(dict(env or {})), tuple(records), MappingProxyType(dict(heads or {})),
                   MappingProxyType(dict(tls or {})))


def read_output_state(output: Path, stack: Stack) -> OutputState:
    """Everything a render of `stack` reads from `output`."""
    output = output.resolve()
    git_apps = [name for name, app in stack.apc.apps.items() if app.git is not None]
    heads = {app: commit for app in git_apps if (commit := head(output, app)) is not None}
    tls: dict[str, bytes] = {}
    for name in TLS_FILES:
        try:
            tls[name] = (output / name).read_bytes()
        except OSError:  # not made yet (or unreadable: made again, as before)
            continue
    return OutputState.of(read_env(output / ENV_FILE), history.read(output), heads, tls)
