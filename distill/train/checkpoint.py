"""Resumable checkpoints: model, optimizer, scheduler, RNG states and step.

Layout: ``checkpoints/step-00000500/{student/, extra.pt, state.pt}``. The
directory is assembled under a temporary name and renamed into place, so a
``step-*`` directory is complete by construction; a crash mid-write leaves
only a ``.tmp-*`` directory, which resume ignores.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from distill.io import atomic_dir

STEP_DIR = re.compile(r"^step-(\d+)$")


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
                    extra_modules: dict[str, torch.nn.Module], keep: int) -> Path:
    final = directory / f"step-{step:08d}"
    with atomic_dir(final) as tmp:
        student.save_pretrained(tmp / "student")
        tokenizer.save_pretrained(tmp / "student")
        torch.save({name: m.state_dict() for name, m in extra_modules.items()}, tmp / "extra.pt")
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_state()}, tmp / "state.pt")
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_training_state(path: Path, student, optimizer, scheduler, extra_modules: dict[str, torch.nn.Module]) -> int:
    """Restore everything saved at ``path`` into live objects; returns the step to continue from."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "student" / "model.safetensors"))
    missing, unexpected = student.load_state_dict(weights, strict=False)
    # save_pretrained drops tied weights (lm_head = embeddings); anything else missing is a real mismatch.
    missing = [k for k in missing if k not in _tied_keys(student)]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    extra = torch.load(path / "extra.pt", weights_only=False)
    for name, module in extra_modules.items():
        module.load_state_dict(extra[name])
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"])


def _tied_keys(model) -> set[str]:
    names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    unique = {name for name, _ in model.named_parameters()}
    return names - unique
