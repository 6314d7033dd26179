"""pytest plugin (entry point `pytest11`): a session-scoped `deploystack_stack` fixture.

Configure it in pytest.ini / pyproject.toml:

    [tool.pytest.ini_options]
    deploystack_spec = "deploystack.yaml"        # relative to the rootdir
    deploystack_services = ["db-primary"]        # optional: only these and what they need

`pytest --deploystack-keep` leaves the stack up after the session for debugging (its spec's path is logged).
Importing this module costs nothing: the Docker SDK is loaded only when the fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from deploystack.testing import StackUnderTest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("deploystack_spec", "spec for the deploystack_stack fixture", default="deploystack.yaml")
    parser.addini("deploystack_services", "services to bring up (default: all)", type="args", default=[])
    parser.addoption("--deploystack-keep", action="store_true", default=False,
                     help="leave the deploystack_stack fixture's stack up after the session")


@pytest.fixture(scope="session")
def deploystack_stack(request: pytest.FixtureRequest) -> Iterator[StackUnderTest]:
    from deploystack.testing import StackUnderTest

    config = request.config
    spec = Path(str(config.getini("deploystack_spec")))
    if not spec.is_absolute():
        spec = config.rootpath / spec
    services = list(config.getini("deploystack_services")) or None
    stack = StackUnderTest(spec, services=services, keep=bool(config.getoption("--deploystack-keep")))
    with stack:
        yield stack
