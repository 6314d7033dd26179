"""`scale` arguments and the spec edit: comments and key order survive, bad words change nothing."""

from __future__ import annotations

import pytest

from deploystack.errors import UsageError
from deploystack.spec.edit import parse_scale_args, set_replicas

APPS = ["backend", "frontend"]

SPEC = """\
# my stack
project: shop   # the name
apc:
  apps:
    backend:
      source: apps/backend   # keep me
      wsgi: backend.wsgi:application
      replicas: 2
    frontend:
      wsgi: frontend.wsgi:application
      source: apps/frontend
"""


def test_apc_sets_every_app_and_names_override() -> None:
    assert parse_scale_args(["apc=4"], APPS) == {"backend": 4, "frontend": 4}
    assert parse_scale_args(["apc=4", "frontend=2"], APPS) == {"backend": 4, "frontend": 2}


@pytest.mark.parametrize(("arg", "message"), [
    ("apc=0", "'apc=0': an app needs at least 1 replica (use `deploystack down` to stop the stack)"),
    ("nosuch=2", "'nosuch=2': no app named 'nosuch' (apps: backend, frontend; apc for all; dbc for database "
                 "replicas)"),
    ("apc=x", "'apc=x': the replica count must be a whole number"),
    ("apc", "'apc': expected TARGET=N, e.g. apc=4 or backend=3"),
])
def test_bad_arguments(arg: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_scale_args([arg], APPS)
    assert str(caught.value) == message


def test_set_replicas_keeps_comments_and_order() -> None:
    edited = set_replicas(SPEC, {"backend": 4, "frontend": 3})
    assert edited == SPEC.replace("replicas: 2", "replicas: 4") + "      replicas: 3\n"


def test_database_replicas() -> None:
    assert parse_scale_args(["dbc=2"], APPS) == {"dbc": 2}
    assert parse_scale_args(["dbc=0"], APPS) == {"dbc": 0}
    assert set_replicas(SPEC, {"dbc": 2}).endswith("dbc:\n  replicas: 2\n")
