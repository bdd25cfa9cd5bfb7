"""scripts/bench.py section 4: steps/s with 1 and 2 processes (issue 12, docs/design.md, More than one process), side by side in one run.

The same global batch every way: 1 process × micro-batch M × 2 accumulation steps, and ``torchrun
--nproc_per_node 2`` × micro-batch M (DDP, and FSDP2), each ``distill train`` on the tiny presets with random
weights (no bootstrap), run one after another with one thread per process, and steps/s taken from the run's own
``train_seconds``. A 2-core CPU can at best double the 1-thread rate: the point here is that it runs and what it
costs; the GPU commands printed at the end measure the same on a GPU node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "distill"]
ONE = [sys.executable, "-m", "distill"]
GPU_COMMANDS = [
    "torchrun --nproc_per_node 8 -m distill train experiment=paper_xsum trainer.device=cuda   # DDP",
    "torchrun --nproc_per_node 8 -m distill train experiment=paper_xsum trainer.distributed.strategy=fsdp2 "
    "teacher.sharding=fsdp2",
    "accelerate launch --config_file $(distill accelerate-config fsdp2) --num_processes 8 -m distill train "
    "experiment=paper_gsm8k",
    "python scripts/bench.py --sections processes --device cuda   # this table on the GPU node",
]


def _train(launcher: list[str], out: Path, method: list[str], extra: list[str], threads: int, steps: int,
           micro: int, device: str) -> dict:
    args = [*launcher, "train", *method, f"trainer.max_steps={steps}", f"trainer.micro_batch_size={micro}",
            "trainer.warmup_steps=1", f"trainer.save_every={steps}", f"trainer.log_every={steps}",
            f"trainer.eval_every={steps}", "trainer.eval_batches=1", "trainer.progress=false",
            f"trainer.device={device}", "student.bootstrap.enabled=false", "teacher.bootstrap.enabled=false",
            "task.generator.sizes.train=2000", "task.generator.sizes.validation=32", "task.generator.sizes.test=32",
            f"hydra.run.dir={out}", f"cache_dir={out.parent / 'cache'}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "offline"}
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:8])} ... failed: {done.stderr.strip().splitlines()[-1:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"steps_per_s": steps / summary["train_seconds"], "wall_s": time.perf_counter() - started}


def processes_section(args) -> list[str]:
    steps, micro = (1, 2) if args.toy else (10, 8) if args.quick else (30, 16)
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    gpus = args.processes if device == "cuda" else 2
    two = [*TWO[:-3], "--nproc_per_node", str(gpus), "-m", "distill"] if device == "cuda" else TWO
    lines = [f"## More than one process: steps/s at the same global batch ({micro} × {gpus} examples, "
             f"{steps} steps, tiny presets, {device})", "",
             "| method | 1 process × 1 thread (accumulation) | 1 process × 2 threads | "
             f"{gpus} processes DDP | {gpus} processes FSDP2 | DDP / 1 process × 1 thread |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for method in (["method=sft"],) if args.toy else (["method=sft"], ["method=gkd", "method.lmbda=1"]):
            name = " ".join(m.split("=", 1)[1] for m in method)
            accum = [f"trainer.grad_accum_steps={gpus}"]
            rows = {
                "one": _train(ONE, Path(tmp) / f"{name}-one", method, accum, 1, steps, micro, device),
                "one2": _train(ONE, Path(tmp) / f"{name}-one2", method, accum, 2, steps, micro, device),
                "ddp": _train(two, Path(tmp) / f"{name}-ddp", method, [], 1, steps, micro, device),
                "fsdp2": _train(two, Path(tmp) / f"{name}-fsdp2", method, ["trainer.distributed.strategy=fsdp2"], 1,
                                steps, micro, device),
            }
            rate = {k: v["steps_per_s"] for k, v in rows.items()}
            lines.append(f"| {name} | {rate['one']:.2f} | {rate['one2']:.2f} | {rate['ddp']:.2f} | "
                         f"{rate['fsdp2']:.2f} | {rate['ddp'] / rate['one']:.2f}× |")
            print(lines[-1], flush=True)
    return lines + [""] + fused_fsdp2_rows(args) + ["", "On a GPU node:", "", *[f"    {command}" for command in GPU_COMMANDS]]


def _fused_step(mode: str, sizes: list[str]) -> dict:
    """scripts/bench_fsdp_fused.py in 2 fresh processes (FSDP2, gloo, one thread each); rank 0's JSON line."""
    command = [*TWO[:-2], str(REPO / "scripts" / "bench_fsdp_fused.py"), mode, *sizes]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"bench_fsdp_fused.py {mode} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fused_fsdp2_rows(args) -> list[str]:
    """Section 4b: one supervised-KD step under FSDP2 (2 processes), the loss fused with the sharded output
    projections against full logits: peak RSS above the warmed-up process, and seconds."""
    vocab, tokens = (512, 32) if args.toy else (32_000, 256)
    sizes = ["--vocab", str(vocab), "--tokens", str(tokens), "--batch", "4", "--layers", "1" if args.toy else "2"]
    full, fused = _fused_step("full", sizes), _fused_step("fused", sizes)
    lines = [f"## 4b. The fused loss under FSDP2: one supervised-KD step, 2 processes, Qwen2-shaped 256/384-wide "
             f"student/teacher, vocabulary {vocab}, 4×{tokens} tokens per process", "",
             "| logits path | peak RSS above the step's start, MiB (max over ranks) | step s |", "|---|---|---|",
             f"| full logits | {full['peak_mib']:.0f} | {full['seconds']:.2f} |",
             f"| fused (hidden states, sharded projection) | {fused['peak_mib']:.0f} | {fused['seconds']:.2f} |",
             f"| **fused / full** | **{fused['peak_mib'] / max(full['peak_mib'], 1e-9):.2f}** | "
             f"**{fused['seconds'] / full['seconds']:.2f}** |"]
    print("\n".join(lines), flush=True)
    return lines
