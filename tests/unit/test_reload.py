"""The one reload path of a service's config (engine/reload.py): what it decides, writes and waits for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploystack.engine import reload
from deploystack.engine.reload import Decision, decide, stale_files, wait_for_old_workers
from deploystack.render.sourcetree import FileData


def test_a_container_made_in_this_run_is_only_marked() -> None:
    assert decide(have="", want="h1", fresh=True, force=True) is Decision.MARK
    assert decide(have="h1", want="h1", fresh=True, force=False) is Decision.MARK


def test_a_current_container_is_left_alone_unless_forced() -> None:
    assert decide(have="h1", want="h1", fresh=False, force=False) is Decision.SKIP
    assert decide(have="h1", want="h1", fresh=False, force=True) is Decision.RELOAD


def test_a_changed_or_unknown_config_reloads() -> None:
    assert decide(have="h0", want="h1", fresh=False, force=False) is Decision.RELOAD
    assert decide(have="", want="h1", fresh=False, force=False) is Decision.RELOAD


def test_only_the_services_files_that_differ_on_disk_are_stale(tmp_path: Path) -> None:
    (tmp_path / "config/lbc").mkdir(parents=True)
    (tmp_path / "config/lbc/nginx.conf").write_bytes(b"old")
    (tmp_path / "config/lbc/jail.local").write_bytes(b"same")
    files = {
        "config/lbc/nginx.conf": FileData(b"new"),
        "config/lbc/jail.local": FileData(b"same"),
        "config/lbc/extra.conf": FileData(b"missing on disk"),
        "config/lbc-other/nginx.conf": FileData(b"another service's"),
        "compose.yaml": FileData(b"not a config file"),
    }
    assert stale_files(files, "config/lbc", tmp_path) == ["config/lbc/extra.conf", "config/lbc/nginx.conf"]


class Workers:
    """A container whose exec_run answers the count of nginx workers still shutting down."""

    def __init__(self, counts: list[bytes], code: int = 0) -> None:
        self.counts = counts
        self.code = code
        self.calls = 0

    def exec_run(self, command: list[str]) -> tuple[int, bytes]:
        self.calls += 1
        return self.code, self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]


class Notes:
    def __init__(self) -> None:
        self.details: list[str] = []

    def step(self, message: str) -> None:
        pass

    def detail(self, message: str) -> None:
        self.details.append(message)


def test_the_wait_ends_when_the_old_workers_are_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload.time, "sleep", lambda _: None)
    container, notes = Workers([b"2\n", b"1\n", b"0\n"]), Notes()
    wait_for_old_workers(container, notes)  # type: ignore[arg-type]
    assert container.calls == 3 and notes.details == []


def test_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 100, 4))
    monkeypatch.setattr(reload.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(reload.time, "sleep", lambda _: None)
    container, notes = Workers([b"1\n"]), Notes()
    wait_for_old_workers(container, notes)  # type: ignore[arg-type]
    assert container.calls == 2  # the clock read 0 (deadline 10), then 4 and 8; 12 is past it
    assert notes.details == [f"old nginx workers still draining after {reload.DRAIN_SECONDS}s; going on"]


def test_no_grep_in_the_container_is_no_wait() -> None:
    container: Any = Workers([b""], code=127)
    wait_for_old_workers(container, Notes())
    assert container.calls == 1
