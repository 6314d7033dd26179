"""All terminal output: rich lives here only. Progress and errors go to stderr, results to stdout.

rich is imported on first use of a table, a coloured line or an error, not with this module: plain results
(`ok`, `--json`, `schema`, log lines) are written directly, so `--help` and `validate` never load it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

# What rich's Text drops from printed strings (bell, backspace, vertical tab, form feed, carriage return):
# plain output keeps doing the same.
_CONTROL_CODES = dict.fromkeys((7, 8, 11, 12, 13))


@cache
def _console(stream: str) -> Console:
    from rich.console import Console

    if stream == "out":  # piped output (CI logs, `| less`) gets a wide console: tables are not cut at 80
        return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    return Console(stderr=True, highlight=False, soft_wrap=True)


def __getattr__(name: str) -> Console:
    """`console.out` / `console.err`: the rich consoles, made when first asked for."""
    if name in ("out", "err"):
        return _console(name)
    raise AttributeError(name)


class Progress:
    """The engine's Reporter for a terminal: one line per step, details only when verbose."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    def step(self, text: str) -> None:
        _console("err").print(f"[cyan]•[/] {text}")

    def detail(self, text: str) -> None:
        if self.verbose:
            _console("err").out(f"  {text}", style="dim")


def error(message: str) -> None:
    """First line marked as the error; further lines (logs, hints) printed as they are."""
    from rich.markup import escape

    first, _, rest = message.partition("\n")
    _console("err").print(f"[bold red]error:[/] {escape(first)}")
    if rest:
        _console("err").out(rest)


def warning(message: str) -> None:
    """Something the user should know that does not stop the command (stderr)."""
    from rich.markup import escape

    _console("err").print(f"[yellow]warning:[/] {escape(message)}")


def problems(lines: Sequence[str]) -> None:
    for line in lines:
        _console("err").out(line)


def say(text: str) -> None:
    """One line of a result on stdout, as it is (tabs expanded and control codes dropped, as rich did)."""
    sys.stdout.write(text.translate(_CONTROL_CODES).expandtabs(8) + "\n")
    sys.stdout.flush()  # `logs -f | grep` sees each line when it comes


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from rich.table import Table

    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*row)
    _console("out").print(grid)


def as_json(data: object) -> None:
    say(json.dumps(data, indent=2, sort_keys=True))
