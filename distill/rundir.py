"""A run directory's lifecycle: held by one process, written only once the command is accepted.

1. ``with RunDir(path, "train.log") as run:`` takes an exclusive lock on
   ``path/.lock`` (``flock``: released by the OS if the process dies, so it
   never goes stale) and writes the holder's PID into it. A second command
   on the same directory is refused with that PID.
2. While the command validates its inputs nothing is written: log lines are
   buffered. A refused command leaves the directory as it was; a directory
   Hydra created just for it is removed again.
3. ``run.accept(files, fresh=...)`` publishes the run: with ``fresh`` a
   directory that holds an earlier run has that run moved to
   ``.replaced/<time>/`` (never mixed with the new one); ``.tmp-*`` leftovers
   of interrupted writes are removed; ``files`` (the composed config) are
   written atomically; the buffered log lines and all later ones go to the
   log file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import logging.handlers
import os
import time
from pathlib import Path

from distill.errors import ConfigError
from distill.io import atomic_write_text, remove_temporaries

log = logging.getLogger(__name__)

LOCK = ".lock"
REPLACED = ".replaced"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _remove_empty(path: Path) -> None:
    """Remove ``path`` and then its parents while they are empty (Hydra made them for a refused command),
    never above the working directory."""
    stop = Path.cwd().resolve()
    current = path.resolve()
    while current not in (stop, current.parent):
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


class RunDir:
    def __init__(self, path: Path, log_name: str, what: str = "distill train"):
        self.path, self.log_name, self.what = Path(path), log_name, what
        self.accepted = False
        self._fd: int | None = None
        self._buffer: logging.handlers.MemoryHandler | None = None
        self._file: logging.FileHandler | None = None

    def __enter__(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        self._created = not any(p.name != LOCK for p in self.path.iterdir())
        self._lock()
        self._buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
        logging.getLogger().addHandler(self._buffer)
        return self

    def _lock(self) -> None:
        while True:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(f"{self.path} is in use by another {self.what} (pid {holder}); wait for it to "
                                  "finish, or use another hydra.run.dir") from None
            if _same_file(fd, self.path / LOCK):
                break
            os.close(fd)  # a refused command removed the file we opened: lock the one now at the path
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        for handler in (self._buffer, self._file):
            if handler is not None:
                root.removeHandler(handler)
                handler.close()
        if not self.accepted and self._created:  # refused before anything was written: leave no trace
            (self.path / LOCK).unlink(missing_ok=True)
            _remove_empty(self.path)
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)

    def holds_run(self) -> bool:
        """Whether the directory holds anything of an earlier command."""
        return any(p.name not in (LOCK, REPLACED) for p in self.path.iterdir())

    def accept(self, files: dict[str, str], fresh: bool) -> None:
        """Publish the run (see the module docstring); call it once all inputs are validated."""
        if fresh and self.holds_run():
            self._move_aside()
        for leftover in remove_temporaries(self.path):
            log.info("removed %s, left by an interrupted write", leftover)
        for relative, text in files.items():
            atomic_write_text(self.path / relative, text)
        self._file = logging.FileHandler(self.path / self.log_name, encoding="utf-8")
        self._file.setFormatter(logging.Formatter(LOG_FORMAT))
        self._buffer.setTarget(self._file)
        self._buffer.flush()
        root = logging.getLogger()
        root.removeHandler(self._buffer)
        self._buffer.close()
        self._buffer = None
        root.addHandler(self._file)
        self.accepted = True

    def _move_aside(self) -> None:
        target = self.path / REPLACED / time.strftime("%Y%m%d-%H%M%S")
        while target.exists():
            target = target.with_name(target.name + "+")
        target.mkdir(parents=True)
        for entry in sorted(self.path.iterdir()):
            if entry.name not in (LOCK, REPLACED):
                os.replace(entry, target / entry.name)
        log.warning("trainer.resume=false: the earlier run in %s was moved to %s", self.path, target)
