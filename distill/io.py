"""Atomic writes and JSONL reading shared by training, evaluation and caches.

Everything a later run trusts (checkpoints, caches, results) is written to a
temporary sibling and renamed into place, so a crash never leaves a file or
directory that looks complete.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temp directory that is renamed to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        _usual_mode(tmp, directory=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        _usual_mode(tmp, directory=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | Path, required_fields: tuple[str, ...] = ()) -> list[dict]:
    """Records of a JSONL file; a bad line raises a DataError naming file and line."""
    path = Path(path)
    records = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            missing = [f for f in required_fields if f not in record]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {missing}; the record has {sorted(record)}")
            records.append(record)
    return records


def append_jsonl(path: str | Path, record: dict) -> None:
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
