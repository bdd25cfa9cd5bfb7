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
import errno
import fcntl
import logging
import logging.handlers
import os
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

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


# The deepest ancestor of this command's output directory that existed before Hydra created that directory
# (recorded by ``NewDirectories`` when Hydra starts). A refused command removes only directories below it.
_EXISTING: Path | None = None


class NewDirectories(Callback):
    """Hydra callback (conf/train.yaml, conf/eval.yaml): note which directories exist before Hydra creates the
    command's output directory, so a refused command removes only what it created."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _record(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _record(config, "hydra.sweep.dir")


_OUTPUT: Path | None = None  # that output directory


def _record(config: DictConfig, key: str) -> None:
    global _EXISTING, _OUTPUT
    from hydra.core.hydra_config import HydraConfig

    _EXISTING = _OUTPUT = None
    try:
        HydraConfig.instance().set_config(config)  # its ${hydra:...} interpolations need it (run_job sets it too)
        path = Path(str(OmegaConf.select(config, key))).expanduser().absolute()
    except Exception:  # an interpolation that cannot resolve: Hydra reports it; we remove nothing above the run dir
        return
    _OUTPUT = path
    while not path.exists() and path != path.parent:
        path = path.parent
    _EXISTING = path


def remove_created_if_empty() -> None:
    """For a command stopped before its output directory was held (a signal while Hydra starts it): the
    directories Hydra made for it go again if nothing was written there."""
    if _OUTPUT is not None and _OUTPUT.is_dir():
        root = created_root(_OUTPUT, existed=True)
        if root is not None:
            remove_empty(_OUTPUT, root)


def forget_existing() -> None:
    """Called when a command ends: the next one records its own."""
    global _EXISTING, _OUTPUT
    _EXISTING = _OUTPUT = None


def created_root(path: Path, existed: bool) -> Path | None:
    """The topmost directory on the way to ``path`` that this command created, or None."""
    path = path.absolute()
    if _EXISTING is not None and _EXISTING in path.parents:
        return next(p for p in [path, *path.parents] if p.parent == _EXISTING)
    return None if existed else path


def remove_empty(path: Path, root: Path) -> None:
    """Remove ``path`` and its parents up to ``root`` (inclusive) while they are empty: directories this
    command created for nothing. Never a directory that existed before, never anything through a link."""
    current = path.absolute()
    while True:
        if current.is_symlink():
            return
        try:
            current.rmdir()
        except OSError:
            return
        if current == root or root not in current.parents:
            return
        current = current.parent


class RunDir:
    def __init__(self, path: Path, log_name: str, what: str = "distill train", rollback: bool = False):
        """``rollback``: a command that fails or is interrupted after ``accept`` takes back what ``accept``
        wrote (``distill eval``: its results appear whole at the end, or not at all)."""
        self.path, self.log_name, self.what, self.rollback = Path(path), log_name, what, rollback
        self.accepted = False
        self._new_files: list[Path] = []  # written by accept where nothing was before
        self._fd: int | None = None
        self._buffer: logging.handlers.MemoryHandler | None = None
        self._file: logging.FileHandler | None = None

    def __enter__(self) -> "RunDir":
        existed = self.path.is_dir()
        self.path.mkdir(parents=True, exist_ok=True)
        self._created = created_root(self.path, existed)  # what to remove again if the command is refused
        self._lock_created = not (self.path / LOCK).exists()
        self._lock()
        self._buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
        logging.getLogger().addHandler(self._buffer)
        return self

    def _lock(self) -> None:
        while True:
            try:  # O_NOFOLLOW: a .lock that is a link must not make us truncate a file elsewhere
                fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise ConfigError(f"{self.path / LOCK} is a symbolic link; remove it and re-run") from None
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

    def __exit__(self, exc_type, *exc) -> None:
        root = logging.getLogger()
        for handler in (self._buffer, self._file):
            if handler is not None:
                root.removeHandler(handler)
                handler.close()
        if exc_type is not None and self.accepted and self.rollback:
            for path in self._new_files:
                path.unlink(missing_ok=True)
            for folder in {path.parent for path in self._new_files} - {self.path}:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # .hydra/, when this command created it
            self.accepted = False
        if not self.accepted and (self._created is not None or self._lock_created):  # refused: leave no trace
            (self.path / LOCK).unlink(missing_ok=True)
        if not self.accepted and self._created is not None:
            remove_empty(self.path, self._created)
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
        for path in [self.path / relative for relative in files] + [self.path / self.log_name]:
            if not path.exists():
                self._new_files.append(path)
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
        replaced = self.path / REPLACED
        if replaced.is_symlink() or (replaced.exists() and not replaced.is_dir()):  # never move a run out through it
            raise ConfigError(f"{replaced} is a link or a file, not the directory trainer.resume=false moves earlier "
                              "runs into; remove it and re-run")
        target = replaced / time.strftime("%Y%m%d-%H%M%S")
        while target.exists():
            target = target.with_name(target.name + "+")
        target.mkdir(parents=True)
        for entry in sorted(self.path.iterdir()):
            if entry.name not in (LOCK, REPLACED):
                os.replace(entry, target / entry.name)
        log.warning("trainer.resume=false: the earlier run in %s was moved to %s", self.path, target)
