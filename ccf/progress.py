"""Progress of long commands (backtest, walk-forward, training, record): a live bar when a terminal is attached.

A bar is drawn on stderr only when stderr is a terminal (and ``CCF_PROGRESS`` is not ``0``); otherwise nothing is
drawn and the command prints its one-line summary at the end, as before. The bar is :mod:`rich`'s (a dependency of
typer); engine code only calls :meth:`Progress.advance`, so it does not know whether a bar is shown.

>>> with progress("reading", unit="records", enabled=False) as bar:
...     bar.advance(3)
...     bar.advance(2)
>>> bar.done
5
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Progress:
    """Counts what a command has done; draws it when a rich bar is attached."""

    def __init__(self, bar: Any = None, task: Any = None) -> None:
        self._bar = bar
        self._task = task
        self.done = 0

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, **fields)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def total(self, total: float | None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total)


def interactive() -> bool:
    """Whether a bar should be drawn: stderr is a terminal and ``CCF_PROGRESS`` is not ``0``."""
    return os.environ.get("CCF_PROGRESS", "1") != "0" and sys.stderr.isatty()


@contextmanager
def progress(description: str, *, total: float | None = None, unit: str = "items",
             enabled: bool | None = None) -> Iterator[Progress]:
    """A :class:`Progress` for the ``with`` block: a bar (count, rate, elapsed; percent and ETA with ``total``)
    when :func:`interactive` (or ``enabled``), a silent counter otherwise."""
    if not (interactive() if enabled is None else enabled):
        yield Progress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            done = f"{task.completed:,.0f}" + ("" if task.total is None else f"/{task.total:,.0f}")
            speed = f" ({task.speed:,.0f}/s)" if task.speed else ""
            return Text(f"{done} {unit}{speed}")

    columns: list[Any] = [TextColumn("[progress.description]{task.description}")]
    if total is not None:
        columns += [BarColumn(), TaskProgressColumn()]
    columns += [Rate(), TimeElapsedColumn()]
    if total is not None:
        columns.append(TimeRemainingColumn())
    with Bar(*columns, console=Console(stderr=True), transient=False) as bar:
        yield Progress(bar, bar.add_task(description, total=total))
