"""What the GKD end-to-end benchmarks share (bench_trl.py, bench_trl_distillation.py): the settings every side
runs with, and the summary of a side's timed steps."""

from __future__ import annotations

import resource
import statistics
from pathlib import Path

import torch

LMBDA, BETA, TEMPERATURE, LR = 0.5, 0.5, 1.0, 2e-3


def _summary(times: list[tuple[bool, float]], warmup: int, lmbda: float = LMBDA,
             generation: list[float] | None = None) -> dict:
    """Median on- and off-policy step times, λ-adjusted steps/s, peaks; ``generation``: seconds spent generating
    in each step (the same order as ``times``), summarised as the median over the kept on-policy steps."""
    kept = times[warmup:]
    gen = [g for (policy, _), g in zip(kept, (generation or [])[warmup:]) if policy]
    on = [t for policy, t in kept if policy]
    off = [t for policy, t in kept if not policy]
    t_on = statistics.median(on) if on else statistics.median(t for _, t in kept)
    t_off = statistics.median(off) if off else statistics.median(t for _, t in kept)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
    return {"on_s": t_on, "off_s": t_off, "steps_per_s": 1.0 / (lmbda * t_on + (1 - lmbda) * t_off),
            "n_on": len(on), "n_off": len(off), "peak_rss_mib": _peak_rss_mib(), "peak_gpu_mib": gpu,
            "gen_s": statistics.median(gen) if gen else None}


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it is not inherited across exec from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


