"""scripts/bench.py section 5: the loss at real heads, from hidden states (issue 13), side by side in one run.

Student and teacher hidden states [B·T × d] and output projections [V × d] at the shapes of real models; each
variant computes the divergence between the two models' distributions, forward + backward (gradients for the
student's hidden states and projection), in a fresh child process (peak RSS above the inputs on CPU,
``max_memory_allocated`` on CUDA; median time over repeats):
  * fused — ``Divergence.fused`` (distill.losses.fused_linear): logits a chunk of rows at a time, never whole;
  * ours  — the projection to full logits, then our chunked kernel (``Divergence.__call__``), the unfused path;
  * TRL   — the projection to full logits, then TRL's ``GKDTrainer.generalized_jsd_loss`` (fkl = β 0, jsd β 0.5).
GPU: ``python scripts/bench.py --sections heads --device cuda --dtype bfloat16``.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench_process import isolated

HEADS = {  # name: (student hidden, teacher hidden, vocabulary)
    "Qwen2.5-0.5B ← 1.5B": (896, 1536, 151_936),
    "T5-small ← T5-XL": (512, 2048, 32_128),
    "T5-base ← T5-XL": (768, 2048, 32_128),
}
TOY_HEADS = {"toy": (32, 48, 512)}
KINDS = {"fkl": {"name": "fkl"}, "jsd(0.5)": {"name": "jsd", "beta": 0.5}}
TRL_BETA = {"fkl": 0.0, "jsd(0.5)": 0.5}


def _inputs(d_s, d_t, vocab, tokens, device, dtype):
    g = torch.Generator().manual_seed(0)
    make = lambda *shape, std: (torch.randn(*shape, generator=g) * std).to(device, dtype)  # noqa: E731
    student_hidden = make(tokens, d_s, std=1.0).requires_grad_()
    student_weight = make(vocab, d_s, std=d_s ** -0.5 * 3).requires_grad_()
    teacher_hidden, teacher_weight = make(tokens, d_t, std=1.0), make(vocab, d_t, std=d_t ** -0.5 * 3)
    return student_hidden, student_weight, teacher_hidden, teacher_weight


def _loss(variant, kind, chunk_size, sh, sw, th, tw, mask):
    from distill.losses.divergences import Divergence

    divergence = Divergence(KINDS[kind]["name"], 1.0, chunk_size, beta=KINDS[kind].get("beta"))
    if variant == "fused":
        return (divergence.fused(sh, sw, th, tw, mask) * mask).sum()
    student_logits, teacher_logits = sh @ sw.T, (th @ tw.T).detach()
    if variant == "ours":
        return (divergence(student_logits, teacher_logits) * mask).sum()
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    return GKDTrainer.generalized_jsd_loss(student_logits.float(), teacher_logits.float(), beta=TRL_BETA[kind],
                                           reduction="sum")


def _child(variant, kind, dims, tokens, device, dtype, chunk_size, repeats, queue) -> None:
    from bench_memory import PeakRSS, rss_mib

    sh, sw, th, tw = _inputs(*dims, tokens, device, getattr(torch, dtype))
    mask = torch.ones(tokens, device=device)

    def run():
        sh.grad, sw.grad = None, None
        _loss(variant, kind, chunk_size, sh, sw, th, tw, mask).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    sh.grad, sw.grad = None, None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base, sampler = rss_mib(), PeakRSS()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else sampler.stop() - base
    queue.put({"time": statistics.median(times), "peak_mib": max(peak, 0.0)})


def heads_section(args, trl: bool) -> list[str]:
    per_row = 16 if args.toy else 512
    tokens, heads = args.batch * per_row, TOY_HEADS if args.toy else HEADS
    repeats = 1 if args.quick else 3
    lines = [f"## 5. The loss at real heads from hidden states, {args.batch}×{per_row} tokens ({args.dtype}, {args.device}), "
             f"forward+backward incl. the projections, median of {repeats}", "",
             "| head | divergence | fused s | ours s | TRL s | fused MiB | ours MiB | TRL MiB | fused/ours mem "
             "| fused/TRL mem | fused/TRL time |", "|" + "---|" * 11]
    print("\n".join(lines), flush=True)
    for head in heads:
        for kind in ["jsd(0.5)"] if args.toy else KINDS:
            variants = ["fused", "ours"] + (["trl"] if trl else [])
            r = {v: isolated(_child, v, kind, heads[head], tokens, args.device, args.dtype, args.chunk_size, repeats)
                 for v in variants}
            f, o, t = r["fused"], r["ours"], r.get("trl")
            trl_cells = (f"{t['time']:.2f}", f"{t['peak_mib']:.0f}", f"{f['peak_mib'] / max(t['peak_mib'], 1e-9):.2f}",
                         f"{f['time'] / t['time']:.2f}") if t else ("–",) * 4
            lines.append(f"| {head} | {kind} | {f['time']:.2f} | {o['time']:.2f} | {trl_cells[0]} | {f['peak_mib']:.0f} "
                         f"| {o['peak_mib']:.0f} | {trl_cells[1]} | {f['peak_mib'] / max(o['peak_mib'], 1e-9):.2f} "
                         f"| {trl_cells[2]} | {trl_cells[3]} |")
            print(lines[-1], flush=True)
    return lines
