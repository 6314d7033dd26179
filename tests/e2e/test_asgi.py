"""An ASGI app (Django + Channels under uvicorn) behind the LBC over TLS: its async view answers, a
websocket echo works through wss://, `scale` 1 -> 3 -> 1 under HTTP load loses nothing, and a deploy under
websocket load ends every socket with the server's close frame (no reset) while HTTP sees no failure.

The websockets are websockets' asyncio client. Its sync client reads a TLS socket in a thread of its own
while the caller's thread writes the handshake on it, and Python's SSL sockets are not safe for that: about
1 handshake in 100 never reached the LBC (nginx: "client timed out ... while waiting for request"), measured
here with 6 clients connecting at once under HTTP load; the asyncio client had none in 600.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin

from deploystack.testing import StackUnderTest
from tests.conftest import REPO, eventually
from tests.load import LoadLoop

pytestmark = pytest.mark.docker

SPEC = REPO / "tests/fixtures/projects/asgi-chat/deploystack.yaml"
ORIGIN = Origin("https://localhost")  # Channels' AllowedHostsOriginValidator checks it against ALLOWED_HOSTS


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUnderTest]:
    # A copy: the deploy test changes the app's code.
    folder = tmp_path_factory.mktemp("asgi-chat")
    shutil.copytree(SPEC.parent, folder, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "staticfiles", "stack"))
    with StackUnderTest(folder / SPEC.name) as stack:
        yield stack


def wss(stack: StackUnderTest, path: str) -> str:
    return stack.url(path).replace("https://", "wss://", 1)


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the LBC's certificate is self-signed
    return context


async def open_socket(stack: StackUnderTest, path: str = "/ws/echo/") -> ClientConnection:
    return await connect(wss(stack, path), ssl=no_verify(), origin=ORIGIN, open_timeout=10, close_timeout=5)


async def echo(ws: ClientConnection, text: str) -> dict[str, str]:
    await ws.send(text)
    reply: dict[str, str] = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
    assert reply["echo"] == text, reply
    return reply


def test_the_async_view_answers_through_the_lbc(chat: StackUnderTest) -> None:
    reply = requests.get(chat.url("/api/hello/"), verify=False, timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # Served by uvicorn (an ASGIRequest), the async ORM reached PostgreSQL (the migrated auth tables).
    assert (body["hello"], body["version"], body["request"], body["users"]) == ("async", "1", "ASGIRequest", 0)
    assert reply.headers["X-Served-By"] == body["served_by"]


def test_websocket_echo_round_trip_over_wss(chat: StackUnderTest) -> None:
    async def round_trip() -> None:
        async with await open_socket(chat) as ws:
            first = await echo(ws, "hello over wss")
            assert (await echo(ws, "ünïcode ✓"))["served_by"] == first["served_by"]

    asyncio.run(round_trip())
    # Upgrades pass on websocket_routes only: elsewhere the handshake reaches Django as a plain GET.
    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(open_socket(chat, "/api/hello/"))
    assert refused.value.response.status_code == 200


@dataclass
class Sockets:
    """How each websocket of the load ended."""

    server_closed: Counter[int] = field(default_factory=Counter)  # close code the server sent
    client_closed: int = 0  # closed by the client at the end of the load
    abnormal: list[str] = field(default_factory=list)  # no close frame: a reset, a timeout
    handshake_failures: list[str] = field(default_factory=list)
    slowest_handshake_s: float = 0.0
    echoes: int = 0
    echoes_of: Counter[int] = field(default_factory=Counter)  # per client
    served_by: set[str] = field(default_factory=set)


class SocketLoad:
    """`clients` tasks (one event loop, in a thread of its own), each holding one websocket and echoing on
    it; when the server closes it, the client records the close frame and connects again. Bounded in
    sockets and time."""

    def __init__(self, stack: StackUnderTest, clients: int = 6, max_seconds: float = 600,
                 max_sockets: int = 500) -> None:
        self.stack, self.clients = stack, clients
        self.deadline = time.monotonic() + max_seconds
        self.max_sockets = max_sockets
        self.result = Sockets()
        self.opened = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SocketLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Sockets:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.result

    def wait_for_each(self, echoes: int) -> None:
        """Until every client has echoed `echoes` more times: each has a working socket (a client still
        reconnecting after a close would otherwise be stopped between two sockets, with none to close)."""
        with self._lock:
            wanted = {n: self.result.echoes_of[n] + echoes for n in range(self.clients)}
        while (any(self.result.echoes_of[n] < want for n, want in wanted.items())
               and time.monotonic() < self.deadline):
            time.sleep(0.05)

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def _loop(self) -> None:
        async def every_client() -> None:
            await asyncio.gather(*(self._run(n) for n in range(self.clients)))

        asyncio.run(every_client())

    async def _run(self, number: int) -> None:
        sent = 0
        while self._running():
            with self._lock:
                if self.opened >= self.max_sockets:
                    return
                self.opened += 1
            started = time.monotonic()
            try:
                ws = await open_socket(self.stack)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                with self._lock:
                    self.result.handshake_failures.append(
                        f"{time.strftime('%H:%M:%S')} after {time.monotonic() - started:.1f}s "
                        f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
                continue
            with self._lock:
                self.result.slowest_handshake_s = max(self.result.slowest_handshake_s, time.monotonic() - started)
            async with ws:
                try:
                    while self._running():
                        sent += 1
                        reply = await echo(ws, f"client {number} message {sent}")
                        with self._lock:
                            self.result.echoes += 1
                            self.result.echoes_of[number] += 1
                            self.result.served_by.add(reply["served_by"])
                        await asyncio.sleep(0.05)
                    await ws.close()
                    with self._lock:
                        self.result.client_closed += 1
                except ConnectionClosed as exc:
                    with self._lock:
                        if exc.rcvd is None:  # no close frame came: the connection was cut (1006)
                            self.result.abnormal.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}")
                        else:
                            self.result.server_closed[exc.rcvd.code] += 1
                except (OSError, TimeoutError) as exc:
                    with self._lock:
                        self.result.abnormal.append(f"{type(exc).__name__}: {exc}")


def test_scale_1_3_1_under_http_load_loses_nothing(chat: StackUnderTest) -> None:
    with LoadLoop(chat.url("/api/hello/"), threads=3, max_requests=20_000, max_seconds=400) as load:
        load.wait_for(100)
        chat.scale("chat", 3)
        # Every replica answers through the LBC before the app shrinks again.
        eventually(lambda: len(load.result.served_by) >= 3, "all three replicas serving", timeout=60)
        chat.scale("chat", 1)
        load.wait_for(load.result.total + 200)
    result = load.result
    print(f"scale 1 -> 3 -> 1: {result.ok} GETs ok ({result.retried} resent after a reload), "
          f"{len(result.failures)} failed, {len(result.served_by)} replicas answered")
    assert result.failures == [], result.failures[:5]
    assert result.ok > 300 and len(result.served_by) >= 3


def cli(stack: StackUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DEPLOYSTACK_OUTPUT": str(stack.target.output)}
    result = subprocess.run([sys.executable, "-m", "deploystack", *args, "-f", str(stack.spec)],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def version(stack: StackUnderTest) -> str:
    reply = requests.get(stack.url("/api/hello/"), verify=False, timeout=10)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["version"])


def test_deploy_and_rollback_close_every_websocket_with_a_close_frame(chat: StackUnderTest) -> None:
    clients = 6
    source = Path(str(chat.stack.apc.apps["chat"].source))
    views = source / "chat" / "views.py"
    views.write_text(views.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    with LoadLoop(chat.url("/api/hello/"), threads=2, max_requests=30_000, max_seconds=900) as http, \
            SocketLoad(chat, clients=clients, max_seconds=900) as sockets:
        for command, expected in (("deploy", "2"), ("rollback", "1")):
            sockets.wait_for_each(5)
            before = set(sockets.result.served_by)
            result = cli(chat, command, "chat")
            assert version(chat) == expected, result.stdout
            # The clients reconnected to the new replica and echo there.
            eventually(lambda old=before: sockets.result.served_by - old,
                       f"echoes from the replica after {command}", timeout=60)
        sockets.wait_for_each(5)
        http.wait_for(http.result.total + 100)
    outcome = sockets.result
    print(f"deploy and rollback under load: {sum(outcome.server_closed.values())} sockets closed by the server "
          f"{dict(outcome.server_closed)}, {outcome.client_closed} by the client, {outcome.echoes} echoes, "
          f"slowest handshake {outcome.slowest_handshake_s:.2f}s, "
          f"{http.result.ok} GETs ok ({http.result.retried} resent after a reload), "
          f"{len(http.result.failures)} failed")
    assert outcome.abnormal == [], outcome.abnormal[:5]
    assert outcome.handshake_failures == [], outcome.handshake_failures[:5]
    # Every socket open on a replaced replica got uvicorn's close frame (1012: service restart), twice over.
    assert set(outcome.server_closed) == {1012} and outcome.server_closed[1012] >= 2 * clients, outcome
    assert outcome.client_closed == clients
    assert http.result.failures == [], http.result.failures[:5]
