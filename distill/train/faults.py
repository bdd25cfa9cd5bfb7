"""Fault injection for the tests: kill or poison a run at an exact point.

``DISTILL_FAULT_INJECT`` holds comma-separated ``KIND@STEP`` entries:
  * ``kill@N``       SIGKILL after optimizer step N is done (and saved, if due);
  * ``kill-save@N``  SIGKILL halfway through writing checkpoint N;
  * ``kill-prune@N`` SIGKILL while pruning old checkpoints after saving checkpoint N;
  * ``term@N``       SIGTERM to ourselves after step N (what a cluster sends before killing);
  * ``nan@N``        treat step N's loss as non-finite;
  * ``slow@N``       spend one extra second in step N (to measure accumulated training time).
``KIND@STEP#RANK`` applies to that rank of a multi-process job only (``kill@3#1``: rank 1 dies after step 3).
Unset in normal use: every check is one environment lookup.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "DISTILL_FAULT_INJECT"


def fault(kind: str, step: int) -> bool:
    for entry in os.environ.get(FAULT_ENV, "").split(","):
        name, _, at = entry.strip().partition("@")
        at, _, rank = at.partition("#")
        if rank and rank != os.environ.get("RANK", "0"):
            continue
        if name == kind and at and int(at) == step:
            return True
    return False


def kill_point(kind: str, step: int) -> None:
    if fault(kind, step):
        os.kill(os.getpid(), signal.SIGKILL)
