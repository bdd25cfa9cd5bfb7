"""Progress of long work, on a terminal and in the log alike.

On a terminal: a rich bar with the latest loss. Everywhere: a progress line
(``train: step 1200/2500 (48%), loss 0.4123, 5321 tokens/s, 3m02s elapsed,
ETA 3m17s``) every ``interval`` seconds through the ``distill.progress``
logger, so a job whose output goes to a file, or its run's log, shows where
it is. On a terminal those lines go to the log file only (``TerminalFilter``
keeps them off the console, where the bar already says it).
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("distill.progress")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class TerminalFilter(logging.Filter):
    """On a console handler: drop progress lines when stdout is a terminal (the bar shows progress)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == log.name and sys.stdout.isatty())


class Progress:
    """``advance()`` per unit of work, ``note(loss=..., tokens_per_s=...)`` when new numbers are known."""

    def __init__(self, enabled: bool, total: int, start: int = 0, description: str = "", unit: str = "step",
                 interval: float = 30.0, console=None):
        self.enabled, self.total, self.done, self.description = enabled, total, start, description
        self.unit, self.interval, self.start = unit, interval, start
        self.fields: dict[str, float] = {}
        self._console = console
        self._bar = self._task = None
        self._began = self._last_line = time.perf_counter()

    def __enter__(self) -> "Progress":
        console = self._console
        if self.enabled and (console is not None or sys.stdout.isatty()):
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
            self._bar = Bar(*columns, transient=True, **({"console": console} if console is not None else {}))
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done, loss="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        if self.enabled and exc[0] is None and self.done > self.start:
            self._line(final=True)

    def note(self, **fields: float) -> None:
        self.fields.update(fields)
        if self._bar is not None and "loss" in fields:
            self._bar.update(self._task, loss=f"loss {fields['loss']:.4f}")

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.advance(self._task, count)
        if self.enabled and time.perf_counter() - self._last_line >= self.interval and self.done < self.total:
            self._line()

    def _line(self, final: bool = False) -> None:
        now = time.perf_counter()
        self._last_line = now
        elapsed = now - self._began
        parts = [f"{self.description}: {self.unit} {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%)"]
        if "loss" in self.fields:
            parts.append(f"loss {self.fields['loss']:.4f}")
        if "tokens_per_s" in self.fields:
            parts.append(f"{self.fields['tokens_per_s']:.0f} tokens/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if not final and self.done > self.start:
            remaining = elapsed / (self.done - self.start) * (self.total - self.done)
            parts.append(f"ETA {_duration(remaining)}")
        log.info(", ".join(parts))


def progress_bar(enabled: bool, total: int, start: int = 0, description: str = "", unit: str = "item",
                 interval: float = 30.0) -> Progress:
    """The ``with progress_bar(...) as bar: bar.advance()`` form used by generation loops."""
    return Progress(enabled, total, start, description, unit, interval)
