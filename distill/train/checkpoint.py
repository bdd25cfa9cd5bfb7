"""Resumable checkpoints: model, optimizer, scheduler, RNG states and step.

Layout: ``checkpoints/step-00000500/{student/, extra.pt, state.pt, manifest.json}``.
The directory is assembled under a ``.tmp-*`` name; ``manifest.json`` (size
and sha256 of every other file, the step, max |w|) is written last; files and
directories are fsynced; then it is renamed into place. Resume trusts a
checkpoint only if it matches its manifest exactly (no file missing, short,
altered or extra), so a truncated file, a flipped byte, a deleted state file
or an empty stray ``step-*`` directory is caught (``distill.train.resume``
renames it ``corrupt-step-*`` with one warning and uses the previous one).
Pruning renames a checkpoint to ``.tmp-*`` before deleting it, so a kill
mid-delete never leaves a partial ``step-*`` behind. A ``step-*`` that is a
symbolic link is not a checkpoint: never listed, resumed from or pruned.

``extra.pt`` and ``state.pt`` are read by torch's weights-only unpickler with
numpy's RNG state as the one addition: the manifest is a checksum, not a
signature, so a crafted pickle in a writable run directory (or in a
``trainer.resume_from`` from elsewhere) is refused, never run.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from distill.errors import ModelError
from distill.io import TMP_PREFIX, atomic_dir, write_manifest, writing
from distill.train.faults import kill_point

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
METHOD_STATE = "__method__"  # key of a method's own state in extra.pt
STATE_KEYS = ("step", "optimizer", "scheduler", "rng")  # what state.pt holds


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, step: int, student, tokenizer, optimizer, scheduler,
                    extra_modules: dict[str, torch.nn.Module], keep: int, info: dict | None = None,
                    protect: str | None = None, method_state: dict | None = None, full=None) -> Path:
    """Write ``step-N`` atomically with its manifest (``info`` is recorded in it), then prune to ``keep``
    (never ``protect``: the checkpoint the current branch started from, for another try from it).
    ``full``: states consolidated from FSDP2 shards (``distill.train.distributed.Consolidated``), written instead
    of the live modules' (the optimizer's then keyed by parameter name)."""
    final = directory / f"step-{step:08d}"
    with writing(final), atomic_dir(final) as tmp:
        student.save_pretrained(tmp / "student", **({"state_dict": full.student} if full else {}))
        tokenizer.save_pretrained(tmp / "student")
        kill_point("kill-save", step)
        extra = full.extra if full else {name: m.state_dict() for name, m in extra_modules.items()}
        if method_state is not None:  # what a method keeps between steps (OSD's replay buffer)
            extra[METHOD_STATE] = method_state
        torch.save(extra, tmp / "extra.pt")
        torch.save({"step": step, "optimizer": full.optimizer if full else optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng_state()}, tmp / "state.pt")
        write_manifest(tmp, {"step": step, **(info or {})})
    prune(directory, keep, step, protect)
    return final


def prune(directory: Path, keep: int, step: int, protect: str | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints (and ``protect``), each renamed away first."""
    for old in list_checkpoints(directory)[:-keep]:
        if old.name == protect:
            continue
        doomed = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}pruned-", dir=directory))
        os.replace(old, doomed / old.name)
        kill_point("kill-prune", step)
        shutil.rmtree(doomed, ignore_errors=True)


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    # A link would lead resume to load, and prune to delete, whatever it points to outside the run.
    found = [p for p in directory.iterdir() if STEP_DIR.match(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def load_training_state(path: Path, student, optimizer, scheduler, extra_modules: dict[str, torch.nn.Module],
                        dist_=None) -> tuple[int, dict | None]:
    """Restore everything saved at ``path`` into live objects (every rank reads it); returns (the step to
    continue from, the method's own state or None)."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "student" / "model.safetensors"))
    if dist_ is not None and dist_.strategy == "fsdp2":
        return _load_sharded(path, weights, student, optimizer, scheduler, extra_modules)
    missing, unexpected = student.load_state_dict(weights, strict=False)
    # save_pretrained drops tied weights (lm_head = embeddings); anything else missing is a real mismatch.
    missing = [k for k in missing if k not in _tied_keys(student)]
    extra = read_state_file(path / "extra.pt")
    absent = sorted(set(extra_modules) - set(extra))
    if missing or unexpected or absent:
        raise ModelError(f"checkpoint {path} does not match this run: missing {missing[:3] + absent}, unexpected "
                         f"{unexpected[:3]}; resume from a checkpoint of the same student and method")
    for name, module in extra_modules.items():
        module.load_state_dict(extra[name])
    state = read_state_file(path / "state.pt")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as exc:  # parameter groups of another model or method
        raise ModelError(f"checkpoint {path}: its optimizer state does not fit this run ({exc})") from None
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"]), extra.get(METHOD_STATE)


def _load_sharded(path: Path, weights: dict, student, optimizer, scheduler, extra_modules) -> tuple[int, dict | None]:
    from distill.train.distributed import load_consolidated

    extra = read_state_file(path / "extra.pt")
    state = read_state_file(path / "state.pt")
    load_consolidated(student, extra_modules, optimizer, weights, extra, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"]), extra.get(METHOD_STATE)


def _tied_keys(model) -> set[str]:
    names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    unique = {name for name, _ in model.named_parameters()}
    return names - unique


def _allowed_globals() -> list:
    """numpy's RNG state (a uint32 ndarray) as numpy pickles it: ``_reconstruct``, ndarray, dtype. numpy 1
    wrote ``numpy.core.multiarray._reconstruct``, numpy 2 ``numpy._core...``: both names are accepted (an
    (object, name) pair), so checkpoints written under either resume under either."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)),
            *((_reconstruct, f"numpy.{core}.multiarray._reconstruct") for core in ("core", "_core"))]


def read_state_file(path: Path, trial: bool = False):
    """``extra.pt`` or ``state.pt``, refused in one line if it holds anything but tensors, containers, numbers,
    strings and numpy's RNG state (such objects could run code as they load). ``trial``: the tensors are mapped
    from the file on the CPU, not read (the check before a run is accepted)."""
    options = {"map_location": "cpu", "mmap": zipfile.is_zipfile(path)} if trial else {}
    try:
        with torch.serialization.safe_globals(_allowed_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol")  # a crafted file's: the error says it all
            return torch.load(path, weights_only=True, **options)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{path} holds objects a checkpoint cannot contain ({_refused(exc)}); it was not loaded, as "
                         "loading it could run code: resume from a checkpoint written by distill, or start afresh "
                         "with trainer.resume=false") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not a readable checkpoint file ({first}); resume from another checkpoint, or "
                         "start afresh with trainer.resume=false") from None


def _refused(exc: Exception) -> str:
    """What the weights-only unpickler refused, from its message (several paragraphs)."""
    text = str(exc)
    if found := re.search(r"GLOBAL ([\w.]+)", text):
        return f"a reference to {found.group(1)}"
    if found := re.search(r"Unsupported operand (\d+)", text):
        return f"pickle opcode {found.group(1)}"
    return "not plain data"


def check_loadable(path: Path) -> None:
    """Before anything is written: the checkpoint's state files load safely and hold what a resume reads."""
    extra, state = read_state_file(path / "extra.pt", trial=True), read_state_file(path / "state.pt", trial=True)
    if not isinstance(extra, dict):
        raise ModelError(f"{path / 'extra.pt'} holds {type(extra).__name__}, not a checkpoint's module states; "
                         "resume from a checkpoint written by distill")
    absent = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if absent:
        raise ModelError(f"{path / 'state.pt'} lacks {', '.join(absent)} of a checkpoint's training state; resume "
                         "from a checkpoint written by distill")
