"""How the engine tells the user what it is doing, without knowing about terminals."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def step(self, text: str) -> None:
        """A line of progress worth showing always ("building backend", "db-primary healthy")."""

    def detail(self, text: str) -> None:
        """Chatty output (build logs); shown with --verbose, kept for error messages otherwise."""


class Silent:
    def step(self, text: str) -> None:
        pass

    def detail(self, text: str) -> None:
        pass
