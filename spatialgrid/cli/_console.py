"""Console helpers shared by CLI commands: rich progress bars and error exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from spatialgrid.progress import ProgressCallback

console = Console()
err_console = Console(stderr=True)


@contextmanager
def progress_bar() -> Iterator[ProgressCallback]:
    """A :data:`ProgressCallback` that draws one rich bar per stage."""
    tasks: dict[str, TaskID] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as bar:

        def callback(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield callback


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` in red on stderr and return an Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)
