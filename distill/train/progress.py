"""Rich progress bars that disappear cleanly when disabled or not on a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, start: int = 0, description: str = "") -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable; a no-op when ``enabled`` is false."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total, completed=start)
        yield lambda: progress.advance(task)
