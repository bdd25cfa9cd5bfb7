"""Where a training run continues from: its own newest good checkpoint, or ``trainer.resume_from``.

``trainer.resume_from`` names a checkpoint to continue from with changed
optimiser settings (a lower lr after a divergence, say): a step number of
this run's checkpoints, a ``checkpoints/step-N`` directory, or a run
directory (its newest checkpoint that verifies).

Planning is read-only (``plan_start``), so a command that is refused changes
nothing; ``apply`` makes the plan's changes once the run is accepted:
  * continuing this run from its own step N starts a *branch*, named by N and
    a hash of the optimiser settings; its checkpoints record it
    (``branch_from`` in their manifests). Newer checkpoints of any other
    branch become ``superseded-step-*`` (kept, never resumed from) and the
    metrics logged past N are copied to ``metrics.superseded.jsonl``.
    Re-running the same command after an interruption resumes the branch;
    the same N with other settings starts a new one.
  * a checkpoint elsewhere seeds this run (a branch named by that path);
    re-running the command resumes the run's own checkpoints of that branch.
    A directory holding another run is refused (``trainer.resume=false``
    moves it aside first).
  * a checkpoint that does not match its manifest is renamed ``corrupt-*``
    with one warning and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import ConfigError, ModelError
from distill.io import atomic_write_bytes, read_manifest, verify_manifest
from distill.settings_keys import OPTIMIZER_FIELDS
from distill.train.checkpoint import STEP_DIR, check_loadable, list_checkpoints

log = logging.getLogger(__name__)



@dataclass
class ResumePlan:
    source: Path | None = None  # the checkpoint to load; None = start from scratch
    branch: str | None = None  # the ``branch_from`` marker this run's new checkpoints carry
    new_branch: bool = False  # a new line of training starts here (a fresh run or a resume_from branch)
    supersede: list[Path] = field(default_factory=list)  # this run's checkpoints of a replaced branch
    corrupt: list[Path] = field(default_factory=list)  # newer checkpoints that fail their manifest


def optimizer_signature(settings) -> str:
    values = {name: list(v) if isinstance(v := getattr(settings, name), tuple) else v for name in OPTIMIZER_FIELDS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def _step(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


def _branch(path: Path) -> str | None:
    return (read_manifest(path) or {}).get("branch_from")


def _newest_good(directory: Path) -> tuple[Path | None, list[Path]]:
    """(newest checkpoint that verifies, the newer ones that do not), reading only."""
    corrupt = []
    for path in reversed(list_checkpoints(directory)):
        problem = verify_manifest(path)
        if problem is None:
            return path, corrupt
        log.warning("checkpoint %s is not usable (%s): it will be moved to corrupt-%s; falling back to the "
                    "previous one", path.name, problem, path.name)
        corrupt.append(path)
    return None, corrupt


def resolve_resume_from(value: str | int, ckpt_dir: Path) -> Path:
    """The checkpoint directory ``trainer.resume_from`` names, verified against its manifest."""
    text = str(value)
    if text.isdigit():
        path = ckpt_dir / f"step-{int(text):08d}"
    else:
        path = Path(text).expanduser()
        if (path / "checkpoints").is_dir():
            path = _newest_good(path / "checkpoints")[0] or path / "checkpoints"
    if not path.is_dir() or (path.is_symlink() and STEP_DIR.match(path.name)):  # a linked step-*: not a checkpoint
        have = ", ".join(p.name for p in list_checkpoints(ckpt_dir)) or "none"
        raise ConfigError(f"trainer.resume_from={value}: no checkpoint at {path} (this run's checkpoints: {have})")
    problem = verify_manifest(path)
    if problem is not None:
        raise ConfigError(f"trainer.resume_from={value}: {path} cannot be used ({problem})")
    return path


def _this_runs_step(value: str | int, ckpt_dir: Path) -> str | None:
    """``step-N`` when ``trainer.resume_from`` names a checkpoint of this run (a step, or a path into it)."""
    text = str(value)
    if text.isdigit():
        return f"step-{int(text):08d}"
    path = Path(text).expanduser()
    inside = path.parent.resolve() == ckpt_dir.resolve() and STEP_DIR.match(path.name)
    return path.name if inside else None


def _within_run(name: str, value: str | int, ckpt_dir: Path, signature: str) -> ResumePlan:
    marker = f"{name}@{signature}"
    current = [p for p in list_checkpoints(ckpt_dir) if _branch(p) == marker and verify_manifest(p) is None]
    if current:  # this very command already started the branch: resume it (``name`` may have been pruned since)
        newer = [p for p in list_checkpoints(ckpt_dir) if _step(p) > _step(current[-1])]
        return ResumePlan(current[-1], marker, supersede=newer)
    source = resolve_resume_from(value, ckpt_dir)
    newer = [p for p in list_checkpoints(ckpt_dir) if _step(p) > _step(source)]
    return ResumePlan(source, marker, new_branch=True, supersede=newer)


def plan_start(resume: bool, resume_from: str | int | None, ckpt_dir: Path, signature: str) -> ResumePlan:
    """Where this run starts (read-only; raises ConfigError for a resume_from that cannot be used)."""
    if resume_from is None:
        if not resume:
            return ResumePlan(new_branch=True)
        own, corrupt = _newest_good(ckpt_dir)
        return ResumePlan(own, _branch(own) if own else None, new_branch=own is None, corrupt=corrupt)
    name = _this_runs_step(resume_from, ckpt_dir)
    if name is not None:
        if not resume:
            raise ConfigError(f"trainer.resume_from={resume_from} names a checkpoint of this run, which "
                              "trainer.resume=false would move aside; drop trainer.resume=false")
        return _within_run(name, resume_from, ckpt_dir, signature)
    source = resolve_resume_from(resume_from, ckpt_dir)
    marker = f"{source.resolve()}@{signature}"
    own, corrupt = _newest_good(ckpt_dir) if resume else (None, [])
    if own is not None and _branch(own) == marker:
        log.info("this run already continued from %s: resuming from its own %s", source, own.name)
        return ResumePlan(own, marker, corrupt=corrupt)
    if own is not None:
        raise ConfigError(f"trainer.resume_from={resume_from}: {ckpt_dir.parent} holds checkpoints of another run; "
                          "continue that one without trainer.resume_from, or add trainer.resume=false to move it "
                          f"aside and start from {source}")
    return ResumePlan(source, marker, new_branch=True, corrupt=corrupt)


def apply(plan: ResumePlan, ckpt_dir: Path) -> None:
    """Make the plan's renames (once the run is accepted)."""
    for path in plan.corrupt:
        _rename(path, ckpt_dir / f"corrupt-{path.name}")
    for path in plan.supersede:
        _rename(path, ckpt_dir / f"superseded-{path.name}")
    metrics = ckpt_dir.parent / "metrics.jsonl"
    if plan.supersede and metrics.exists():
        # Written by rename, not through whatever metrics.superseded.jsonl may link to.
        atomic_write_bytes(ckpt_dir.parent / "metrics.superseded.jsonl", metrics.read_bytes())
        log.info("%d newer checkpoint(s) renamed superseded-step-*; their metrics kept in metrics.superseded.jsonl",
                 len(plan.supersede))


def _rename(path: Path, target: Path) -> None:
    """``path`` to ``target``, replacing an earlier ``target``: a link is unlinked, never followed."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    os.replace(path, target)


def check_compatible(source: Path, student) -> None:
    """Before anything is written: the checkpoint holds this student's tensors, shape for shape, and its state
    files load without running code (``check_loadable``)."""
    from safetensors import safe_open

    check_loadable(source)
    weights = source / "student" / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        saved = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    model = {key: tuple(t.shape) for key, t in student.state_dict().items()}
    for key, shape in saved.items():
        if model.get(key) != shape:
            raise ModelError(f"checkpoint {source} holds another model ({key}: {shape} there, {model.get(key)} here); "
                             "resume from a checkpoint of this student")
