"""Atomic writes and JSONL reading shared by training, evaluation and caches.

Everything a later run trusts (checkpoints, caches, results) is written to a
temporary sibling (``.tmp-*``), flushed to disk (fsync of every file and
directory) and renamed into place, then the parent directory is fsynced: a
crash or power loss never leaves a file or directory that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from distill.errors import DataError


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _usual_mode(path: str | Path, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700; results should be as readable as any file the user writes."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


TMP_PREFIX = ".tmp-"


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a directory's entry to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publishable(tree: Path) -> None:
    """Usual permissions and fsync for everything under ``tree`` (safetensors writes its files 0600)."""
    for current, dirs, files in os.walk(tree):
        for name in files:
            if not os.path.islink(os.path.join(current, name)):  # chmod would change the link's target
                _usual_mode(os.path.join(current, name), directory=False)
                fsync_path(os.path.join(current, name))
        for name in dirs:
            if not os.path.islink(os.path.join(current, name)):
                _usual_mode(os.path.join(current, name), directory=True)
        fsync_path(current)
    _usual_mode(tree, directory=True)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temp directory that is renamed to ``final`` only if the block succeeds.

    An existing ``final`` is first renamed aside (never deleted before the new
    one is in place), so there is always a complete version on disk.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
    try:
        yield tmp
        _publishable(tmp)
        old = None
        with _signals_held():  # a signal between the two renames would leave neither version in place
            if final.exists() or final.is_symlink():  # a link is moved aside (and unlinked), never followed
                old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{final.name}-", dir=final.parent))
                os.replace(final, old / final.name)
            os.replace(tmp, final)
        fsync_path(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM for a few system calls (delivered right after); a no-op off the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _restore_swapped(directory: Path) -> None:
    """A crash (SIGKILL, power) between the two renames of ``atomic_dir`` leaves the only complete copy
    in ``.tmp-old-NAME-*/NAME``: put it back where it belongs. Links are neither followed nor restored: a
    linked ``.tmp-old-*`` would move another directory's files in here."""
    for old in directory.glob(f"{TMP_PREFIX}old-*"):
        if old.is_symlink() or not old.is_dir():
            continue
        for entry in old.iterdir():
            target = directory / entry.name
            if not entry.is_symlink() and not target.exists() and not target.is_symlink():
                os.replace(entry, target)


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete ``.tmp-*`` leftovers of writes a crash interrupted (a link is unlinked, its target left alone);
    only call it while holding the directory."""
    if not directory.is_dir():
        return []
    _restore_swapped(directory)
    leftovers = sorted(p for p in directory.iterdir() if p.name.startswith(TMP_PREFIX))
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


MANIFEST = "manifest.json"

# How a full disk or a file-size limit reads in the messages of libraries that do not raise OSError
# (safetensors is Rust, torch.save is C++): errno 28 ENOSPC, 27 EFBIG, 122 EDQUOT.
_WRITE_FAILURES = {"No space left": errno.ENOSPC, "os error 28": errno.ENOSPC, "File too large": errno.EFBIG,
                   "os error 27": errno.EFBIG, "Disk quota": errno.EDQUOT, "os error 122": errno.EDQUOT}


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Re-raise a failed write of ``path`` from any library as an OSError naming ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except Exception as exc:
        for marker, code in _WRITE_FAILURES.items():
            if marker in str(exc):
                raise OSError(code, os.strerror(code), str(path)) from exc
        raise


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(root: Path, info: dict) -> None:
    """Sizes and sha256 of every file under ``root``; written last, it marks the directory complete."""
    files = {rel: {"size": (root / rel).stat().st_size, "sha256": _file_digest(root / rel)} for rel in _files(root)}
    (root / MANIFEST).write_text(json.dumps({"files": files, **info}, indent=1) + "\n", encoding="utf-8")


def read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def verify_manifest(path: Path) -> str | None:
    """None if ``path`` matches its manifest exactly, else why not (one phrase)."""
    manifest = read_manifest(path)
    if manifest is None:
        return "no readable manifest.json (unfinished, or not written by this version of distill)"
    expected, present = manifest["files"], set(_files(path))
    for rel, entry in sorted(expected.items()):
        if rel not in present:
            return f"{rel} is missing"
        size = (path / rel).stat().st_size
        if size != entry.get("size"):
            return f"{rel} has {size} bytes, {entry.get('size')} expected (truncated?)"
        if _file_digest(path / rel) != entry.get("sha256"):
            return f"{rel} does not match its sha256 (corrupted)"
    extra = sorted(present - set(expected))
    return f"unexpected file {extra[0]}" if extra else None


def build_once(marker: Path, build: Callable[[], None]) -> bool:
    """Run ``build`` unless ``marker`` (a file it creates last) exists; True if it ran here.

    Parallel jobs filling one cache entry (sweeps under joblib or SLURM) serialise on a
    lock file beside the entry: one builds, the others wait and then reuse its result.
    """
    if marker.exists():
        return False
    lock = marker.parent.with_name(marker.parent.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        if marker.exists():
            return False
        build()
        return True


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with writing(path), os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _usual_mode(tmp, directory=False)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | Path, required_fields: tuple[str, ...] = (), text_fields: tuple[str, ...] = ()) -> list[dict]:
    """Records of a JSONL file; a bad line raises a DataError naming file and line.

    ``text_fields`` must hold strings: ``null`` or a number would otherwise be
    trained on as the text "None" or "42".
    """
    path = Path(path)
    records = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                                "re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            record = _parse_record(path, lineno, line)
            missing = [f for f in required_fields if f not in record]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {missing}; the record has {sorted(record)}")
            for field in text_fields:
                if not isinstance(record[field], str):
                    raise DataError(f"{path}:{lineno}: field {field!r} must be a string, got {_json_kind(record[field])}")
            records.append(record)
    return records


def _parse_record(path: Path, lineno: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
    return record


def _json_kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"


def append_jsonl(path: str | Path, record: dict) -> None:
    """One line per record; a kill mid-append can leave a torn last line, which readers tolerate."""
    with writing(path), Path(path).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
