"""All terminal output: rich lives here only. Progress and errors go to stderr, results to stdout.

rich is imported on first use of a table, a coloured line or an error, json on first --json, not with this
module: plain results (`ok`, `schema`, log lines) are written directly, so `--help` and `validate` never load
them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

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

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def step(self, text: str) -> None:
        _console("err").print(f"[cyan]•[/] {text}")

    def detail(self, text: str) -> None:
        if self.verbose:
            _console("err").out(f"  {text}", style="dim")


class LiveProgress(Progress):
    """On a terminal: the running step on a live line (its number, its time so far, the services started
    and not ready yet); each finished step stays as a line with the time it took (an image's build time)."""

    def __init__(self, verbose: bool = False, console: Console | None = None) -> None:
        from rich.live import Live

        super().__init__(verbose)
        self.console = console or _console("err")
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=True)
        self.current: str | None = None
        self.started = 0.0
        self.count = 0
        self.waiting: list[str] = []

    def __enter__(self) -> LiveProgress:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        self.live.stop()

    def step(self, text: str) -> None:
        self._finish()
        self.count += 1
        self.current, self.started = text, time.monotonic()
        verb, _, name = text.partition(" ")
        if verb in ("creating", "starting") and name not in self.waiting:
            self.waiting.append(name)
        elif text.endswith(" ready"):  # `<service> ready`: its replicas are no longer waited for
            service = text.removesuffix(" ready")
            self.waiting = [w for w in self.waiting if w != service and not w.startswith(f"{service}-")]

    def _finish(self) -> None:
        from rich.markup import escape

        if self.current is not None:
            done, self.current = self.current, None  # off the live line before it is printed above it
            self.console.print(f"[cyan]•[/] {escape(done)} [dim]({time.monotonic() - self.started:.1f}s)[/]")

    def __rich__(self) -> RenderableType:
        from rich.spinner import Spinner
        from rich.text import Text

        if self.current is None:
            return ""
        waiting = f" · waiting for {', '.join(self.waiting)}" if self.waiting else ""
        line = f"step {self.count} · {self.current} · {time.monotonic() - self.started:.0f}s{waiting}"
        return Spinner("dots", Text(line), style="cyan")


def progress(verbose: bool = False) -> Progress:
    """A live display on a terminal, the plain lines of `Progress` otherwise (pipes, CI logs, TERM=dumb)."""
    if sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        return LiveProgress(verbose)
    return Progress(verbose)


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
    import json

    say(json.dumps(data, indent=2, sort_keys=True))
