"""All terminal output: rich lives here only. Progress and errors go to stderr, results to stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Piped output (CI logs, `| less`) gets a wide console, so tables are not cut at 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Progress:
    """The engine's Reporter for a terminal: one line per step, details only when verbose."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    def step(self, text: str) -> None:
        err.print(f"[cyan]•[/] {text}")

    def detail(self, text: str) -> None:
        if self.verbose:
            err.out(f"  {text}", style="dim")


def error(message: str) -> None:
    """First line marked as the error; further lines (logs, hints) printed as they are."""
    first, _, rest = message.partition("\n")
    err.print(f"[bold red]error:[/] {escape(first)}")
    if rest:
        err.out(rest)


def problems(lines: Sequence[str]) -> None:
    for line in lines:
        err.out(line)


def say(text: str) -> None:
    out.out(text)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*row)
    out.print(grid)


def as_json(data: object) -> None:
    out.out(json.dumps(data, indent=2, sort_keys=True))
