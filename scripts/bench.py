"""Benchmarks measured side by side in one run, printed as ratios (docs/performance.md).

    python scripts/bench.py --quick            # < 5 min on a 2-core CPU
    python scripts/bench.py --device cuda      # on a GPU machine

Section 1, divergence kernels: forward + backward of every divergence on
[B × T × V] logits, ours (chunked, closed-form gradient) against a naive
full-materialisation reference written here from the definitions (docs/methods.md), and
against TRL's ``generalized_jsd_loss`` when ``trl`` is installed (the
``bench`` extra). Each measurement runs in a fresh child process so its peak
memory is its own (CPU: peak RSS above the inputs; CUDA:
``max_memory_allocated`` above the inputs); times are medians over repeats,
the variants alternating. Values and gradients are compared with the naive
float64 reference (max relative difference).

Sections 2 and 3 (bench_steps.py, bench_trl.py): where a step's time goes per method, and steps/s against TRL's
GKDTrainer (3) and DistillationTrainer (3b, bench_trl_distillation.py).
Section 4 (bench_distributed.py): steps/s with 1 and 2 processes at the same global batch (DDP, FSDP2); 4b
(bench_fsdp_fused.py): the fused loss under FSDP2, peak memory against full logits.
Section 5 (bench_fused.py): the loss at Qwen and T5 heads from hidden states, fused vs full logits vs TRL.
Section 6 (bench_gkd_step.py): a whole GKD step with Qwen- and T5-shaped models, fused vs full logits vs TRL's
GKDTrainer and DistillationTrainer.
Sections 7 and 8 (bench_teacher_cache.py, bench_cross_tokenizer.py): teacher caches; tokenizers that differ.
Section 9 (bench_decode.py): on-policy decoding against its own limit and HF generate.
``--toy`` runs every section at toy sizes in about a minute and a half (tests/integration/test_bench.py).
"""

from __future__ import annotations

import os

# Every variant (ours and TRL's, in spawned children that inherit this) allocates on transparent huge pages,
# as `distill` itself does (distill/__init__.py): a comparison of algorithms, not of allocator settings.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_steps, bench_trl, bench_setup

import bench_process  # noqa: E402
from bench_memory import PeakRSS, rss_mib  # noqa: E402
from distill.losses import divergences as D  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # children inherit: keep the table readable
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DIVERGENCES = {
    "fkl": {"name": "fkl"},
    "rkl": {"name": "rkl"},
    "jsd(0.5)": {"name": "jsd", "beta": 0.5},
    "tvd": {"name": "tvd"},
    "skl": {"name": "skl", "skew": 0.1},
    "srkl": {"name": "srkl", "skew": 0.1},
}
SECTIONS = ("divergences", "steps", "trl", "processes", "heads", "gkdstep", "tcache", "cross", "decode")
TRL_BETA = {"fkl": 0.0, "rkl": 1.0, "jsd(0.5)": 0.5}  # TRL's β=0 is KL(p‖q), β=1 is KL(q‖p)


def naive(kind: dict, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-token values straight from the definitions, every [tokens × vocab] intermediate materialised."""
    log_q, log_p = torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)
    q, p = log_q.exp(), log_p.exp()
    name = kind["name"]
    if name == "fkl":
        return (p * (log_p - log_q)).sum(-1)
    if name == "rkl":
        return (q * (log_q - log_p)).sum(-1)
    if name == "jsd":
        beta = kind["beta"]
        log_m = torch.log(beta * p + (1 - beta) * q)
        return beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(-1)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    skew = kind["skew"]
    if name == "skl":
        return (p * (log_p - torch.log(skew * p + (1 - skew) * q))).sum(-1)
    return (q * (log_q - torch.log(skew * q + (1 - skew) * p))).sum(-1)


def ours(kind: dict, student: torch.Tensor, teacher: torch.Tensor, chunk_size: int) -> torch.Tensor:
    spec = D.Divergence(kind["name"], 1.0, chunk_size, beta=kind.get("beta"), skew=kind.get("skew"))
    return spec(student, teacher)


def trl_loss(beta: float, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    # reduction="sum": the per-token values summed, comparable with ours.sum()
    return GKDTrainer.generalized_jsd_loss(student, teacher, beta=beta, reduction="sum")


def _inputs(shape, device, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = (3 * torch.randn(shape, generator=generator)).to(device, dtype).requires_grad_()
    teacher = (3 * torch.randn(shape, generator=generator)).to(device, dtype)
    return student, teacher


def _child(variant: str, div: str, shape, device: str, dtype: str, chunk_size: int, repeats: int, queue) -> None:
    """One variant in a fresh process: median time and peak memory above the inputs."""
    torch.set_num_threads(torch.get_num_threads())
    student, teacher = _inputs(shape, device, getattr(torch, dtype))
    weights = torch.rand(shape[:-1], device=device)

    def run():
        student.grad = None
        if variant == "ours":
            loss = (ours(DIVERGENCES[div], student, teacher, chunk_size) * weights).sum()
        elif variant == "naive":
            loss = (naive(DIVERGENCES[div], student.float(), teacher.float()) * weights).sum()
        else:
            loss = trl_loss(TRL_BETA[div], student.float(), teacher.float())
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    student.grad = None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_mib()
    sampler = PeakRSS() if device != "cuda" else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        student.grad = None
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = sampler.stop() - base
    queue.put({"time": statistics.median(times), "peak_mib": max(peak, 0.0)})


def agreement(div: str, shape, chunk_size: int, trl: bool) -> dict:
    """Max relative difference of values and gradients, ours (and TRL's) vs float64 naive."""
    small = (shape[0], min(shape[1], 64), shape[2])
    student, teacher = _inputs(small, "cpu", torch.float32, seed=1)
    weights = torch.rand(small[:-1])
    ref_student = student.detach().double().requires_grad_()
    ref = naive(DIVERGENCES[div], ref_student, teacher.double())
    (ref * weights.double()).sum().backward()

    def rel(a, b):
        return float((a.detach().double() - b.detach()).abs().max() / b.detach().abs().max().clamp(min=1e-30))

    value = ours(DIVERGENCES[div], student, teacher, chunk_size)
    (value * weights).sum().backward()
    out = {"value": rel(value, ref.detach()), "grad": rel(student.grad, ref_student.grad)}
    if trl and div in TRL_BETA:
        student.grad = None
        ref_student.grad = None
        trl_value = trl_loss(TRL_BETA[div], student, teacher)
        trl_value.backward()
        ref_sum = naive(DIVERGENCES[div], ref_student, teacher.double()).sum()
        ref_sum.backward()
        out["trl_value"] = rel(trl_value.detach().reshape(1), ref_sum.detach().reshape(1))
        out["trl_grad"] = rel(student.grad, ref_student.grad)
    return out


def divergence_section(args, trl: bool) -> list[str]:
    shape = (args.batch, args.tokens, args.vocab)
    lines = [f"## 1. Divergence kernels, logits {shape[0]}×{shape[1]}×{shape[2]} ({args.dtype}, {args.device}), "
             f"forward+backward, median of {args.repeats}",
             "", "| divergence | ours s | naive s | TRL s | ours/naive time | ours/TRL time | ours MiB | naive MiB | TRL MiB "
             "| ours/naive mem | ours/TRL mem | max rel diff value / grad |", "|" + "---|" * 12]
    print("\n".join(lines), flush=True)
    for div in args.only or DIVERGENCES:
        variants = ["ours", "naive"] + (["trl"] if trl and div in TRL_BETA else [])
        results = {v: bench_process.isolated(_child, v, div, shape, args.device, args.dtype, args.chunk_size,
                                             args.repeats) for v in variants}
        agree = agreement(div, shape, args.chunk_size, trl)
        o, n, t = results["ours"], results["naive"], results.get("trl")

        def fmt(x, spec="{:.3f}"):
            return spec.format(x) if x is not None else "–"

        lines.append(
            f"| {div} | {fmt(o['time'])} | {fmt(n['time'])} | {fmt(t and t['time'])} | {o['time'] / n['time']:.2f} "
            f"| {fmt(t and o['time'] / t['time'], '{:.2f}')} | {o['peak_mib']:.0f} | {n['peak_mib']:.0f} "
            f"| {fmt(t and t['peak_mib'], '{:.0f}')} | {o['peak_mib'] / max(n['peak_mib'], 1e-9):.2f} "
            f"| {fmt(t and o['peak_mib'] / max(t['peak_mib'], 1e-9), '{:.2f}')} "
            f"| {agree['value']:.1e} / {agree['grad']:.1e}"
            + (f" (TRL {agree['trl_value']:.1e} / {agree['trl_grad']:.1e})" if "trl_value" in agree else "") + " |")
        print(lines[-1], flush=True)
    return lines


def header() -> list[str]:
    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = "not installed"
    import transformers

    return [f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}",
            f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, trl {trl_version}",
            f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')} (every variant)", ""]


def _divergence_key(parser, name: str) -> str:
    """A row of DIVERGENCES by its key or its divergence name (`--only jsd` is the jsd(0.5) row)."""
    if name in DIVERGENCES:
        return name
    matches = [key for key, kind in DIVERGENCES.items() if kind["name"] == name]
    if not matches:
        parser.error(f"--only {name}: choose from {', '.join(DIVERGENCES)}")
    return matches[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (the < 5 min setting)")
    parser.add_argument("--toy", action="store_true",
                        help="every section at toy sizes, in seconds: checks that each runs and prints its ratios "
                             "(tests/integration/test_bench.py); its figures mean nothing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="divergences to run (default: all)")
    parser.add_argument("--processes", type=int, default=8, help="processes (GPUs) for --sections processes on CUDA")
    parser.add_argument("--layers", type=int, default=2, help="layers per model in --sections gkdstep (Qwen shapes)")
    parser.add_argument("--shapes", nargs="*", choices=["qwen", "t5"], default=["qwen", "t5"],
                        help="model pairs of --sections gkdstep")
    parser.add_argument("--sections", nargs="*", choices=SECTIONS, default=None,
                        help="sections to run (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.toy:
        args.quick, args.batch, args.tokens, args.vocab, args.chunk_size, args.layers = True, 1, 16, 128, 8, 1
        args.repeats = 1
        bench_process.IN_PROCESS = True  # its figures mean nothing: no fresh process per variant
    args.repeats = args.repeats or (3 if args.quick else 7)
    has_trl = importlib.util.find_spec("trl") is not None
    lines = header()
    print("\n".join(lines), flush=True)
    sections = args.sections or SECTIONS
    args.only = [_divergence_key(parser, name) for name in args.only] if args.only else None
    if args.toy and args.only is None:  # one row with TRL's counterpart, one without
        args.only = ["jsd(0.5)", "tvd"]
    if "divergences" in sections:
        lines += divergence_section(args, has_trl) + [""]
    if "steps" in sections:
        from bench_steps import breakdown_section

        lines += breakdown_section(args) + [""]
    if "trl" in sections:
        from bench_trl import trl_section

        lines += trl_section(args, has_trl) + [""]
    if "processes" in sections:
        from bench_distributed import processes_section

        lines += processes_section(args) + [""]
    if "heads" in sections:
        from bench_fused import heads_section

        lines += heads_section(args, has_trl) + [""]
    if "gkdstep" in sections:
        from bench_gkd_step import gkd_step_section

        lines += gkd_step_section(args, has_trl) + [""]
    if "tcache" in sections:  # the testbed's bootstrapped models when cached, else random-init ones (it says which)
        from bench_teacher_cache import tcache_section

        part = tcache_section(argparse.Namespace(experiment="testbed_arith", examples=16 if args.toy else 512,
                                                 cache_dir=os.environ.get("DISTILL_CACHE", "outputs/cache"),
                                                 toy=args.toy))
        print("\n".join(part), flush=True)
        lines += part + [""]
    if "cross" in sections:
        from bench_cross_tokenizer import GPT2, cross_section

        part = cross_section(argparse.Namespace(steps=1 if args.toy else 10, batch=2 if args.toy else 32, gpt2=GPT2))
        print("\n".join(part), flush=True)
        lines += part + [""]
    if "decode" in sections:
        from bench_decode import decode_section

        lines += decode_section(args) + [""]
    if args.json:
        args.json.write_text(json.dumps(lines, indent=1))


if __name__ == "__main__":
    main()
