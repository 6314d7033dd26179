"""Database router: writes to the primary, reads spread over live streaming replicas.

Reads go to the primary instead when a replica could return stale data for this request:
inside an atomic block on the primary, after a write in the same request ("read your writes",
reset per request by ReadYourWritesMiddleware), or inside ``pin_to_primary()``. Writes made
with a raw cursor are not seen by the router: wrap such code in ``pin_to_primary()``.
Outside requests (shell, Celery) nothing resets the flag, so after one write a thread keeps
reading from the primary, which is the safe side.

Before a read, the chosen replica must connect (or, for a kept connection, answer Django's
once-per-request health ping); one that fails is skipped for LIVENESS_TTL seconds, and with
no live replica reads go to the primary. A replica that dies in the middle of a request
still fails that request.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, Error, InterfaceError, OperationalError, connections, transaction
from django.db import router as django_router

from .conf import REPLICA_PREFIX

T = TypeVar("T")

PRIMARY: str = DEFAULT_DB_ALIAS  # "default"

# The alias chosen for the last read in this context, so a view can report it.
used_alias: ContextVar[str] = ContextVar("deploystack_used_alias", default=PRIMARY)
_wrote: ContextVar[bool] = ContextVar("deploystack_wrote", default=False)
_pinned: ContextVar[int] = ContextVar("deploystack_pinned", default=0)

LIVENESS_TTL = 5.0  # seconds a replica that failed its check is left alone


@contextmanager
def pin_to_primary() -> Iterator[None]:
    """Send every read in the block to the primary (also usable as a decorator)."""
    token = _pinned.set(_pinned.get() + 1)
    try:
        yield
    finally:
        _pinned.reset(token)


def record_write() -> None:
    """Mark this request as having written: its later reads go to the primary."""
    _wrote.set(True)


def start_request() -> None:
    """Forget the previous request's writes and read alias (called by ReadYourWritesMiddleware)."""
    _wrote.set(False)
    used_alias.set(PRIMARY)


class PrimaryReplicaRouter:
    """Django DATABASE_ROUTERS entry; replicas are the aliases named ``replica_<n>``."""

    def __init__(self, replicas: list[str] | None = None, ttl: float = LIVENESS_TTL) -> None:
        if replicas is None:
            replicas = [alias for alias in settings.DATABASES if alias.startswith(REPLICA_PREFIX)]
        self.replicas = replicas
        self.ttl = ttl
        self._turn = itertools.count()  # round-robin position, shared by the process's threads
        self._dead_since: dict[str, float] = {}  # alias -> when it last failed its check
        self._lock = threading.Lock()

    def db_for_read(self, model: type[Any], **hints: Any) -> str:
        alias = self._choose_read()
        used_alias.set(alias)
        return alias

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        record_write()
        return PRIMARY

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # the replicas hold the same data as the primary

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == PRIMARY  # replicas get the schema by streaming replication

    def _choose_read(self) -> str:
        if not self.replicas or _pinned.get() or _wrote.get() or transaction.get_connection(PRIMARY).in_atomic_block:
            return PRIMARY
        now = time.monotonic()
        candidates = [alias for alias in self.replicas if not self._known_dead(alias, now)]
        with self._lock:
            turn = next(self._turn)
        for step in range(len(candidates)):
            alias = candidates[(turn + step) % len(candidates)]
            if self._alive(alias):
                return alias
            self._dead_since[alias] = now
        return PRIMARY

    def mark_dead(self, alias: str) -> None:
        """Skip `alias` for the next `ttl` seconds (a query on it just failed)."""
        self._dead_since[alias] = time.monotonic()

    def _known_dead(self, alias: str, now: float) -> bool:
        since = self._dead_since.get(alias)
        return since is not None and now - since < self.ttl

    @staticmethod
    def _alive(alias: str) -> bool:
        """Connect (or check the kept connection) now: the query would do it anyway."""
        connection = connections[alias]
        try:
            # With CONN_HEALTH_CHECKS a kept connection is pinged once per request (Django
            # would do it at the first query) and dropped when dead, so this reconnects.
            connection.close_if_health_check_failed()
            connection.ensure_connection()
        except Error:
            return False
        return True


def retry_on_primary(read: Callable[[], T]) -> T:
    """Run `read`; when the replica it used fails under it (killed, restarting), skip that replica for a
    while and run the read again on the primary. Reads only: never wrap a write in this."""
    try:
        return read()
    except (OperationalError, InterfaceError):
        alias = used_alias.get()
        if alias == PRIMARY:
            raise
        for candidate in django_router.routers:
            if isinstance(candidate, PrimaryReplicaRouter):
                candidate.mark_dead(alias)
        connections[alias].close()
        with pin_to_primary():
            return read()
