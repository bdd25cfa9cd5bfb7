"""Where a training run continues from: its own newest good checkpoint, or ``trainer.resume_from``.

``trainer.resume_from`` names a checkpoint to continue from with changed
optimiser settings (a lower lr after a divergence, say): a step number of
this run's checkpoints, a ``checkpoints/step-N`` directory, or a run
directory (its newest checkpoint that verifies). A checkpoint of this run
makes the newer ones ``superseded-step-*`` (kept, never resumed from) and
keeps a copy of the metrics logged past it; checkpoints written after that
record ``branch_from`` in their manifest, so re-running the same command
after an interruption resumes the new branch instead of superseding it. A
checkpoint elsewhere seeds this run; once this run has checkpoints of its
own, re-running the command resumes from those.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from distill.errors import ConfigError
from distill.io import read_manifest, verify_manifest
from distill.train.checkpoint import STEP_DIR, latest_good_checkpoint, list_checkpoints

log = logging.getLogger(__name__)


def _newest_verified(directory: Path) -> Path | None:
    """Like ``latest_good_checkpoint`` but read-only: another run's directory is never changed."""
    for path in reversed(list_checkpoints(directory)):
        if verify_manifest(path) is None:
            return path
    return None


def resolve_resume_from(value: str | int, ckpt_dir: Path) -> Path:
    """The checkpoint directory ``trainer.resume_from`` names, verified against its manifest."""
    text = str(value)
    if text.isdigit():
        path = ckpt_dir / f"step-{int(text):08d}"
    else:
        path = Path(text).expanduser()
        if (path / "checkpoints").is_dir():
            path = _newest_verified(path / "checkpoints") or path / "checkpoints"
    if not path.is_dir():
        have = ", ".join(p.name for p in list_checkpoints(ckpt_dir)) or "none"
        raise ConfigError(f"trainer.resume_from={value}: no checkpoint at {path} (this run's checkpoints: {have})")
    problem = verify_manifest(path)
    if problem is not None:
        raise ConfigError(f"trainer.resume_from={value}: {path} cannot be used ({problem})")
    return path


def _step(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


def _branch(path: Path) -> str | None:
    return (read_manifest(path) or {}).get("branch_from")


def _supersede(ckpt_dir: Path, doomed: list[Path]) -> None:
    """Checkpoints of the branch being replaced: renamed (kept, never resumed from), metrics copied."""
    for path in doomed:
        target = ckpt_dir / f"superseded-{path.name}"
        if target.exists():
            shutil.rmtree(target)
        os.replace(path, target)
    metrics = ckpt_dir.parent / "metrics.jsonl"
    if doomed and metrics.exists():
        shutil.copy2(metrics, ckpt_dir.parent / "metrics.superseded.jsonl")
        log.info("%d newer checkpoint(s) renamed superseded-step-*; their metrics kept in metrics.superseded.jsonl",
                 len(doomed))


def _this_runs_step(value: str | int, ckpt_dir: Path) -> str | None:
    """``step-N`` when ``trainer.resume_from`` names a checkpoint of this run (a step, or a path into it)."""
    text = str(value)
    if text.isdigit():
        return f"step-{int(text):08d}"
    path = Path(text).expanduser()
    inside = path.parent.resolve() == ckpt_dir.resolve() and STEP_DIR.match(path.name)
    return path.name if inside else None


def _within_run(name: str, value: str | int, ckpt_dir: Path) -> tuple[Path, str]:
    """Continue this run from its own checkpoint ``name``, or from the branch already started there
    (its checkpoints carry ``branch_from = name``; ``name`` itself may have been pruned since)."""
    branch = [p for p in list_checkpoints(ckpt_dir) if _branch(p) == name and verify_manifest(p) is None]
    if branch:
        return branch[-1], name
    source = resolve_resume_from(value, ckpt_dir)
    _supersede(ckpt_dir, [p for p in list_checkpoints(ckpt_dir) if _step(p) > _step(source)])
    return source, name


def starting_checkpoint(resume: bool, resume_from: str | int | None, ckpt_dir: Path) -> tuple[Path | None, str | None]:
    """(checkpoint this run starts from or None for scratch, the branch marker its new checkpoints carry)."""
    if resume_from is None:
        own = latest_good_checkpoint(ckpt_dir) if resume else None
        return own, (_branch(own) if own else None)
    name = _this_runs_step(resume_from, ckpt_dir)
    if name is not None:
        return _within_run(name, resume_from, ckpt_dir)
    source = resolve_resume_from(resume_from, ckpt_dir)
    own = latest_good_checkpoint(ckpt_dir) if resume else None
    if own is not None:
        log.info("this run already continued from %s: resuming from its own %s", source, own.name)
        return own, _branch(own)
    return source, None
