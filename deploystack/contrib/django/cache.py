"""A memcached cache backend that keeps its connections across requests."""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.memcached import PyMemcacheCache


class PersistentPyMemcacheCache(PyMemcacheCache):  # type: ignore[misc]  # Django ships no type hints
    """Django closes memcached connections at the end of every request, so each request paid a new TCP
    connection (measured: 100 GETs, 100 connections, p50 1.28x Redis's). pymemcache reconnects by itself
    when memcached restarts, so keeping them is safe."""

    def close(self, **kwargs: Any) -> None:
        pass
