"""Logging for humans on stderr: a rich console, progress bars and a quiet switch.

stdout is reserved for the output artifact's path (so `X=$(llmforge ...)` chains); every
message, table and progress bar in llmforge goes through `console` here, which writes to
stderr.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"quiet": os.environ.get("LLMFORGE_QUIET") == "1"}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet
    console.quiet = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def _rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def info(message: str) -> None:
    if not _state["quiet"] and _rank0():
        console.print(message)


def warn(message: str) -> None:
    if _rank0():
        console.print(f"[yellow]warning:[/] {message}")


def error(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/] {message}")


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Bar]:
    """A progress bar on stderr (silent when quiet, on non-zero ranks or off a terminal)."""
    disabled = _state["quiet"] or not _rank0()
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=disabled, transient=False) as bar:
        task = bar.add_task(description, total=total, status="")
        yield Bar(bar, task)


class Bar:
    """Handle on one progress task: `advance(n)` and `status(text)`."""

    def __init__(self, progress: Progress, task: int):
        self._progress, self._task = progress, task

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)

    def status(self, text: str) -> None:
        self._progress.update(self._task, status=text)

    def total(self, total: float) -> None:
        self._progress.update(self._task, total=total)
