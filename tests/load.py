"""A bounded load loop through the LBC: a few threads of GETs, stopped by the caller, a count or a clock.

Shared by e2e tests (which assert on failures) and benchmarks (which report latencies).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests
import urllib3

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the stacks' certs are self-signed


@dataclass
class Result:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # time.monotonic() at each failure's end
    latencies: list[float] = field(default_factory=list)
    served_by: set[str] = field(default_factory=set)
    # GETs sent on a kept-alive connection that the LBC closed while reloading, before any reply, and
    # sent again on a new connection, as browsers and HTTP libraries do for idempotent requests.
    retried: int = 0

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


class LoadLoop:
    """GET `url` from `threads` threads until stop(), `max_requests` in all, or `max_seconds`."""

    def __init__(self, url: str, threads: int = 4, max_requests: int = 20_000, max_seconds: float = 300.0,
                 timeout: float = 5.0) -> None:
        self.url = url
        self.threads = threads
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.result = Result()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> LoadLoop:
        self.started = time.monotonic()
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Result:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)
        return self.result

    def wait_for(self, requests_done: int) -> None:
        """Block until at least `requests_done` requests were made (or the loop ended)."""
        while self.result.total < requests_done and not self._stop.is_set() and self._alive():
            time.sleep(0.05)

    def _alive(self) -> bool:
        return any(w.is_alive() for w in self._workers)

    def _run(self) -> None:
        session = requests.Session()
        deadline = self.started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.result.total >= self.max_requests:
                    return
            began = time.monotonic()
            retried = False
            try:
                try:
                    reply = session.get(self.url, timeout=self.timeout, verify=False)
                except requests.ConnectionError as exc:
                    if "RemoteDisconnected" not in str(exc):
                        raise
                    retried = True
                    reply = session.get(self.url, timeout=self.timeout, verify=False)
                error = None if reply.status_code == 200 else f"HTTP {reply.status_code}"
                served = reply.headers.get("X-Served-By", "")
            except requests.RequestException as exc:
                error, served = f"{type(exc).__name__}: {exc}", ""
            elapsed = time.monotonic() - began
            with self._lock:
                self.result.retried += retried
                self.result.latencies.append(elapsed)
                if error is None:
                    self.result.ok += 1
                    self.result.served_by.add(served)
                else:
                    self.result.failures.append(error)
                    self.result.failed_at.append(began + elapsed)
