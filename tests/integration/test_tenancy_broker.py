"""Each app's own RabbitMQ user and vhost on the real broker image, as the plan configures them: an app's
user works on its own vhost only, is no administrator, and cannot open another app's vhost or the
administrator's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from deploystack.plan.tenancy import rabbitmq_password_secret
from tests.integration.conftest import Project, role_container
from tests.integration.test_roles import amqp_url

pytestmark = pytest.mark.docker
kombu = pytest.importorskip("kombu")
amqp = pytest.importorskip("amqp")


@pytest.fixture(scope="module")
def broker(project: Project) -> Iterator[tuple[Any, int]]:
    with role_container(project, "rabbitmq", 5672, timeout_s=180) as (container, port):
        yield container.get_wrapped_container(), port


def url(project: Project, port: int, app: str, vhost: str | None = None) -> str:
    password = project.rendered.secrets[rabbitmq_password_secret(app)]
    return amqp_url(app, password, port, vhost or app)


def test_an_app_sends_and_receives_on_its_own_vhost(project: Project, broker: tuple[Any, int]) -> None:
    _, port = broker
    with kombu.Connection(url(project, port, "backend"), connect_timeout=10) as conn:
        queue = conn.SimpleQueue(f"it-{uuid.uuid4().hex}", queue_opts={"auto_delete": True})
        try:
            queue.put({"task": "mine"})
            message = queue.get(timeout=10)
            assert message.payload == {"task": "mine"}
            message.ack()
        finally:
            queue.close()


@pytest.mark.parametrize("vhost", ["frontend", "bff", "app", "/"])
def test_an_app_cannot_open_another_vhost(project: Project, broker: tuple[Any, int], vhost: str) -> None:
    _, port = broker
    with kombu.Connection(url(project, port, "backend", vhost), connect_timeout=10) as conn, \
            pytest.raises((amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed)):
        conn.connect()


def test_app_users_are_no_administrators(broker: tuple[Any, int]) -> None:
    container, _ = broker
    code, out = container.exec_run(["rabbitmqctl", "-q", "--no-table-headers", "list_users"], user="rabbitmq")
    assert code == 0, out.decode()
    tags = dict(line.split("\t", 1) for line in out.decode().strip().splitlines() if "\t" in line)
    assert {app: tags[app].strip() for app in ("backend", "frontend", "bff")} == {
        "backend": "[]", "frontend": "[]", "bff": "[]"}
    code, out = container.exec_run(["rabbitmqctl", "-q", "--no-table-headers", "list_user_permissions", "backend"],
                                   user="rabbitmq")
    assert code == 0 and [line.split("\t")[0] for line in out.decode().strip().splitlines()] == ["backend"], out
