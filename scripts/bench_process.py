"""One measured variant per fresh process, for every section of scripts/bench.py that compares variants: each gets
its own peak memory, and none inherits the warm caches or allocator state of the one before it.

At ``--toy`` sizes (whose figures mean nothing) the variants run in the calling process instead: the same code,
without a Python start-up per variant, which is most of a toy section's time (tests/integration/test_bench.py).
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queues

IN_PROCESS = False  # set by scripts/bench.py --toy


def isolated(target, *args, **kwargs) -> dict:
    """What ``target(*args, queue, **kwargs)`` put on its queue, run in a fresh spawned process. A child killed (out
    of memory) never answers: a RuntimeError says so instead of waiting forever."""
    if IN_PROCESS:
        answer = queues.SimpleQueue()
        target(*args, answer, **kwargs)
        return answer.get_nowait()
    ctx = mp.get_context("spawn")
    answer = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, answer), kwargs=kwargs)
    proc.start()
    while True:
        try:
            result = answer.get(timeout=5)
            break
        except queues.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__} exited with code {proc.exitcode} before reporting") from None
    proc.join()
    return result
