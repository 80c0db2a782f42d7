"""The bulk jobs' progress bar: answered rows, with total, percentage, rate and ETA.

A rich progress bar on stderr (stdout may carry the result CSV).  Without a
total (stdin) it shows the count, rate and elapsed time only.  Disabled, it
does nothing at all; it never prints a value, only counts.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["RowProgress"]


class _RateColumn(ProgressColumn):
    """Rows per second, averaged by rich over the last samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s")


class RowProgress:
    """Counts rows of one job; use as a context manager."""

    def __init__(self, what: str, total: int | None, *, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if enabled:
            columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn()]
            if total is not None:
                columns += [MofNCompleteColumn(), TaskProgressColumn()]
            else:
                columns += [TextColumn("{task.completed:,} rows")]
            columns += [_RateColumn(), TimeElapsedColumn()]
            if total is not None:
                columns += [TextColumn("ETA"), TimeRemainingColumn()]
            self._progress = Progress(*columns, console=Console(stderr=True))
            self._task = self._progress.add_task(what, total=total)

    def advance(self, rows: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, rows)

    def __enter__(self) -> RowProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
