"""Learning-rate schedule (linear warmup, then cosine / linear decay or constant) and data order."""

from __future__ import annotations

import math

import torch

from distill.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier on the peak lr at optimizer step ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"trainer.lr_schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def make_scheduler(optimizer, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float):
    lr_factor(0, warmup_steps, max_steps, schedule, min_lr_ratio)  # validate before training starts
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, max_steps, schedule, min_lr_ratio)
    )


def step_indices(step: int, batch_size: int, num_examples: int, seed: int, order: str = "shuffled",
                 start: int = 0) -> list[int]:
    """Example indices of optimizer step ``step``: a pure function of (step, seed).

    The data is an endless chain of seeded epoch permutations; step s takes
    positions [s·B, (s+1)·B). Resuming at step s therefore sees exactly the
    batches an uninterrupted run would, with no sampler state to save.
    ``order="stream"`` takes the examples in their own order (OSD's request
    stream) from index ``start`` on, wrapping around.
    """
    if order == "stream":
        return [(start + p) % num_examples for p in range(step * batch_size, (step + 1) * batch_size)]
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, num_examples)
        indices.append(_permutation(epoch, num_examples, seed)[offset])
    return indices


_PERM_CACHE: dict[tuple[int, int, int], list[int]] = {}


def micro_batches(indices: list[int], step: int, rank: int, world: int, micro_size: int):
    """This rank's micro-batches of one optimizer step's window ``indices``: (example indices, positions) each.

    Each rank takes its own contiguous part of the window. A position is the example's place in the run's
    stream (step · window + slot): it keys every sample, and stays global, so what is drawn for an example does
    not depend on the micro-batch size or the world size."""
    window = len(indices)
    local = window // world
    first = rank * local
    for start in range(first, first + local, micro_size):
        chosen = indices[start : min(start + micro_size, first + local)]
        yield chosen, [step * window + start + slot for slot in range(len(chosen))]


def _permutation(epoch: int, num_examples: int, seed: int) -> list[int]:
    key = (epoch, num_examples, seed)
    if key not in _PERM_CACHE:
        if len(_PERM_CACHE) > 4:
            _PERM_CACHE.clear()
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _PERM_CACHE[key] = torch.randperm(num_examples, generator=generator).tolist()
    return _PERM_CACHE[key]


def used_indices(max_steps: int, batch_size: int, num_examples: int, seed: int) -> set[int]:
    """Every example index that steps [0, max_steps) visit: a run that stops early never needs the rest.

    Step s takes positions [s·B, (s+1)·B) of the chain of epoch permutations, so
    the run visits the first max_steps·B positions: the whole set once an epoch
    is complete, else a prefix of the first permutation.
    """
    total = max_steps * batch_size
    if total >= num_examples:
        return set(range(num_examples))
    return set(_permutation(0, num_examples, seed)[:total])
