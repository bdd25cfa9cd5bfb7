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
mid-delete never leaves a partial ``step-*`` behind.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from distill.errors import ModelError
from distill.io import TMP_PREFIX, atomic_dir, write_manifest, writing
from distill.train.faults import kill_point

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
METHOD_STATE = "__method__"  # key of a method's own state in extra.pt


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def max_abs_weight(modules) -> float:
    """Largest |w| over the modules' parameters (inf or nan if any is not finite); one host sync."""
    peaks = [p.detach().abs().max() for m in modules for p in m.parameters() if p.numel()]
    return float(torch.stack(peaks).max()) if peaks else 0.0


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
    found = [p for p in directory.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


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
    extra = torch.load(path / "extra.pt", weights_only=False)
    absent = sorted(set(extra_modules) - set(extra))
    if missing or unexpected or absent:
        raise ModelError(f"checkpoint {path} does not match this run: missing {missing[:3] + absent}, unexpected "
                         f"{unexpected[:3]}; resume from a checkpoint of the same student and method")
    for name, module in extra_modules.items():
        module.load_state_dict(extra[name])
    state = torch.load(path / "state.pt", weights_only=False)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as exc:  # parameter groups of another model or method
        raise ModelError(f"checkpoint {path}: its optimizer state does not fit this run ({exc})") from None
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"]), extra.get(METHOD_STATE)


def _load_sharded(path: Path, weights: dict, student, optimizer, scheduler, extra_modules) -> tuple[int, dict | None]:
    from distill.train.distributed import load_consolidated

    extra = torch.load(path / "extra.pt", weights_only=False)
    state = torch.load(path / "state.pt", weights_only=False)
    load_consolidated(student, extra_modules, optimizer, weights, extra, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"]), extra.get(METHOD_STATE)


def _tied_keys(model) -> set[str]:
    names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    unique = {name for name, _ in model.named_parameters()}
    return names - unique
