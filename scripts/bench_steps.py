"""scripts/bench.py section 2: where a training step's time goes, per method, on the tiny presets.

Each method runs the real loop body (``Trainer.train_step``, the finiteness
flag, clipping, AdamW, scheduler) for a few steps after a warm-up, with
timers wrapped around the pieces a step is made of. Regions nest and each is
charged only its own time (a student forward inside generation counts as
generation), so the columns add up to the timed part and "everything else"
is the loop's own overhead: batching, collation, reduction, bookkeeping.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

from bench_process import isolated

COLUMNS = ("generation", "teacher forward", "student forward+backward", "loss", "optimizer")
METHODS = ("sft", "supervised_kd", "seqkd", "gkd", "minillm", "xkd")


class Breakdown:
    """Exclusive wall time per named region (CPU work is synchronous; on CUDA each region synchronises)."""

    def __init__(self, device: torch.device):
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @contextmanager
    def region(self, name: str):
        self.sync()
        start = time.perf_counter()
        self.stack.append([name, 0.0])
        try:
            yield
        finally:
            self.sync()
            elapsed = time.perf_counter() - start
            _, nested = self.stack.pop()
            self.totals[name] += elapsed - nested
            if self.stack:
                self.stack[-1][1] += elapsed

    def inside(self, name: str) -> bool:
        return any(frame[0] == name for frame in self.stack)

    def wrap(self, owner, attr: str, name: str, unless_inside: str | None = None) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)  # keeps the signature (the KV-cache argument's name is read from it)
        def timed(*args, **kwargs):
            if unless_inside and self.inside(unless_inside):
                return original(*args, **kwargs)
            with self.region(name):
                return original(*args, **kwargs)

        setattr(owner, attr, timed)


def _instrument(timer: Breakdown, trainer) -> None:
    import distill.data.trajectories as trajectories
    import distill.methods.gkd as gkd
    import distill.methods.supervised_kd as supervised_kd
    import distill.methods.xkd as xkd
    import distill.train.loop as loop

    ctx = trainer.ctx
    timer.wrap(trajectories, "decode", "generation")
    # MiniLLM's teacher advances inside generation, with its own KV cache: charged to the teacher.
    timer.wrap(trajectories.TeacherMixture, "__init__", "teacher forward")
    timer.wrap(trajectories.TeacherMixture, "advance", "teacher forward")
    for module in (gkd, supervised_kd, xkd):
        timer.wrap(module, "teacher_forward", "teacher forward")
    timer.wrap(ctx.student, "forward", "student forward+backward", unless_inside="generation")
    timer.wrap(torch.Tensor, "backward", "student forward+backward")
    timer.wrap(trainer.method, "loss_terms", "loss")
    timer.wrap(loop.torch.nn.utils, "clip_grad_norm_", "optimizer")
    timer.wrap(trainer.optimizer, "step", "optimizer")
    timer.wrap(trainer.optimizer, "zero_grad", "optimizer")


def _child(method: str, steps: int, warmup: int, max_train: int, device: str, queue, extra=()) -> None:
    from bench_setup import build
    from distill import config as C
    from distill.train.loop import Trainer

    cfg, method_obj, ctx, train_data, label = build([f"method={method}", "trainer.progress=false", *extra], device,
                                                    max_train)
    setup = {}
    if hasattr(method_obj, "setup"):
        ctx.cache_dir = Path(tempfile.mkdtemp())  # a cold cache of teacher outputs, then the same one warm
        for kind in ("cold", "warm"):
            start = time.perf_counter()
            prepared = method_obj.setup(ctx, train_data, False)
            setup[kind] = time.perf_counter() - start
        train_data = prepared
    settings = C.trainer_settings(cfg)
    trainer = Trainer(method_obj, ctx, train_data, [], settings, Path(tempfile.mkdtemp()), cfg.seed, None, {})

    def step(index: int) -> None:  # the body of Trainer.run between logging steps
        totals = trainer.train_step(index)
        trainer._note_finite(index, totals)
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    for index in range(warmup):
        step(index)
    timer = Breakdown(ctx.device)
    _instrument(timer, trainer)
    totals = []
    for index in range(warmup, warmup + steps):
        before = dict(timer.totals)
        with timer.region("step"):
            step(index)
        totals.append({k: timer.totals[k] - before.get(k, 0.0) for k in list(timer.totals)})
    rows = {k: statistics.median(t.get(k, 0.0) for t in totals) for k in (*COLUMNS, "step")}
    # the "step" region's exclusive time is exactly what no other region claimed
    rows["total"] = sum(rows[k] for k in (*COLUMNS, "step"))
    queue.put({"rows": rows, "teacher": label, "micro_batch": settings.micro_batch_size, "setup": setup,
               "examples": len(train_data)})


def breakdown_section(args) -> list[str]:
    steps, warmup = (1, 1) if args.toy else (4, 1) if args.quick else (10, 2)
    print(f"## 2. Step breakdown per method (running {len(METHODS)} methods)...", flush=True)
    toy = ["trainer.micro_batch_size=2", "task.max_target_length=4"] if args.toy else []
    results = {m: isolated(_child, m, steps, warmup, 8 if args.toy else 256, args.device, extra=toy) for m in METHODS}
    first = next(iter(results.values()))
    lines = [f"## 2. Step breakdown per method, tiny presets ({first['teacher']}; random-init tiny student), "
             f"micro-batch {first['micro_batch']}, median of {steps} steps (ms, share of the step)", "",
             "| method | step ms | " + " | ".join(COLUMNS) + " | everything else (loop overhead) |",
             "|" + "---|" * (len(COLUMNS) + 3)]
    for method, result in results.items():
        rows = result["rows"]
        cells = [f"{1000 * rows[c]:.0f} ({rows[c] / rows['total']:.0%})" for c in (*COLUMNS, "step")]
        lines.append(f"| {method} | {1000 * rows['total']:.0f} | " + " | ".join(cells) + " |")
    seqkd = results["seqkd"]
    lines += ["", f"SeqKD teacher-output cache ({seqkd['examples']} training prompts, greedy): generating them "
              f"{seqkd['setup']['cold']:.1f} s, reading the cache {seqkd['setup']['warm']:.2f} s "
              f"({seqkd['setup']['cold'] / max(seqkd['setup']['warm'], 1e-9):.0f}× less); generated once per "
              "(teacher, prompts, decoding) and shared by every later run, instead of once per epoch."]
    print("\n".join(lines), flush=True)
    return lines
