"""Edits of the spec text that keep comments and key order (ruamel.yaml round-trip): used by `scale`.

Pure: text in, text out. The caller validates the result before it replaces the file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from deploystack.errors import UsageError

ASSIGNMENT = re.compile(r"^([a-z][a-z0-9-]*)=(.*)$")


def parse_scale_args(args: list[str], apps: list[str], workers: Sequence[str] = ()) -> dict[str, int]:
    """`apc=4` (every app), `backend=4 frontend=2`, `backend-worker=3`, `dbc=2` (database replicas)
    -> {target: replicas}; later words win.

    `workers`: the apps that have Celery workers; their targets are `<app>-worker`.
    """
    if not args:
        raise UsageError("scale needs at least one TARGET=N, e.g. apc=4 or backend=3")
    wanted: dict[str, int] = {}
    for arg in args:
        match = ASSIGNMENT.match(arg)
        if match is None:
            raise UsageError(f"{arg!r}: expected TARGET=N, e.g. apc=4 or backend=3")
        target, count = match.groups()
        if not count.isdigit():
            raise UsageError(f"{arg!r}: the replica count must be a whole number")
        if target == "dbc":  # database replicas: 0 is a primary alone
            wanted["dbc"] = int(count)
            continue
        if int(count) < 1:
            raise UsageError(f"{arg!r}: an app needs at least 1 replica (use `deploystack down` to stop the stack)")
        if target == "apc":
            wanted |= {app: int(count) for app in apps}
        elif target in apps or target.removesuffix("-worker") in workers:
            wanted[target] = int(count)
        else:
            targets = ", ".join([*apps, *(f"{w}-worker" for w in workers)])
            raise UsageError(f"{arg!r}: no app named {target!r} (apps: {targets}; apc for all; dbc for "
                             "database replicas)")
    return wanted


def set_replicas(text: str, replicas: dict[str, int]) -> str:
    """The spec text with apc.apps.<app>.replicas (or .worker.replicas for <app>-worker) set;
    everything else, comments included, kept."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    document: CommentedMap = yaml.load(text)
    apps = document["apc"]["apps"]
    for target, count in replicas.items():
        if target == "dbc":
            document.setdefault("dbc", CommentedMap())["replicas"] = count
        elif target in apps:
            apps[target]["replicas"] = count
        else:
            apps[target.removesuffix("-worker")]["worker"]["replicas"] = count
    stream = io.StringIO()
    yaml.dump(document, stream)
    return stream.getvalue()
