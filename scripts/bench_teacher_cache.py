"""scripts/bench.py section `tcache`: what a teacher cache costs and what it leaves out, side by side in one run.

For each support policy (top k, or the fewest tokens leaving at most ε outside) on the same examples: bytes per
output token on disk, the mean support size, the build time, the mean tail mass, and on one batch the measured
L1 error of the supervised-KD gradient against the live teacher's next to the certified bound
(docs/methods.md, "Sparse teachers"); and what float16 storage does to the loss. Models: the experiment's
bootstrapped teacher and SFT start when they are cached (`cache_dir`), as the run would load them.

    python scripts/bench_teacher_cache.py [--experiment testbed_arith] [--examples 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.data.collate import collate  # noqa: E402
from distill.data.teacher_cache import CacheSettings, TeacherCache, build, items_digest  # noqa: E402
from distill.losses.sparse import grad_l1_bound, sparse_divergence  # noqa: E402
from distill.models.forward import token_view, view_targets  # noqa: E402

POLICIES = [{"k": 8}, {"k": 64}, {"k": 128}, {"epsilon": 1e-2}, {"epsilon": 1e-3}, {"epsilon": 1e-4}]


def _models(experiment: str, cache_dir: str):
    """The experiment's models as a run loads them, where their bootstraps are cached; else random-init ones (no
    quarter-hour bootstrap inside a benchmark). Also which it was, for the table."""
    from dataclasses import replace

    from bench_setup import compose_config, teacher_is_cached
    from distill import config as C
    from distill.train.bootstrap import prepare_model
    from distill.train.sources import model_sources, training_items

    cfg = compose_config([f"experiment={experiment}", "method=supervised_kd", f"cache_dir={cache_dir}"])
    inputs = C.train_inputs(cfg)
    sources = model_sources(inputs.sources, inputs.task)
    teacher_spec, student_spec = inputs.teacher, inputs.student
    cached = teacher_is_cached(teacher_spec, sources)
    if not cached:
        teacher_spec = replace(teacher_spec, bootstrap={**teacher_spec.bootstrap, "enabled": False})
        student_spec = replace(student_spec, bootstrap={**student_spec.bootstrap, "enabled": False})
    teacher, tokenizer = prepare_model(teacher_spec, "teacher", sources)
    student, _ = prepare_model(student_spec, "student", sources)
    items = training_items(inputs.task, sources, tokenizer, student, inputs.method)
    label = "bootstrapped models (cached)" if cached else "random-init models (no cached bootstrap)"
    return teacher.eval(), student.eval(), tokenizer, items, inputs.method.divergence, label


def _policy_row(policy, teacher, student, pad, items, divergence, batch, out: Path, dtype="float32", batch_size=64):
    settings = CacheSettings(**{"k": None, "epsilon": None, "k_max": 1024, "dtype": dtype, "dir": None,
                                "batch_size": batch_size, "shard_examples": 4096, **policy})
    started = time.perf_counter()
    build(teacher, token_view, lambda chunk: collate(chunk, pad, False), items, settings, out,
          {"items": items_digest(items)}, divergence.kd_temperature)
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in out.rglob("*.arrow"))
    tokens = sum(len(item.target_ids) for item in items)
    cache = TeacherCache(out, {})
    sparse = cache.sparse_teacher(batch["items"], *view_targets(student, batch["batch"]))
    mask = batch["mask"]
    support = ((sparse.ids >= 0).sum(-1).float() * mask).sum() / mask.sum()
    tail = (sparse.log_tail.exp() * mask).sum() / mask.sum()
    logits = batch["student_logits"]
    errors = []
    for fn in (lambda z: divergence(z, batch["teacher_logits"]), lambda z: sparse_divergence(divergence, z, sparse)):
        z = logits.clone().requires_grad_(True)
        (fn(z) * mask).sum().backward()
        errors.append(z.grad)
    error = ((errors[0] - errors[1]).abs().sum(-1) * mask).sum() / mask.sum()
    bound = (grad_l1_bound(divergence, logits, sparse) * mask).sum() / mask.sum()
    loss = (sparse_divergence(divergence, logits, sparse) * mask).sum() / mask.sum()
    return {"bytes": size / tokens, "support": float(support), "seconds": seconds, "tail": float(tail),
            "error": float(error), "bound": float(bound), "loss": float(loss)}


def _table(title: str, teacher, student, pad: int, items, divergence, policies, gradient_examples: int,
           batch_size: int) -> list[str]:
    """One table: every support policy on the same examples, then float16 against float32 storage at ε = 1e-3."""
    chosen = items[:gradient_examples]
    batch = collate(chosen, pad, False)
    with torch.no_grad():
        teacher_logits, student_logits = token_view(teacher, batch).logits, token_view(student, batch).logits
    mask = view_targets(student, batch)[1]
    data = {"items": chosen, "batch": batch, "mask": mask, "teacher_logits": teacher_logits,
            "student_logits": student_logits}
    dense = float((divergence(student_logits, teacher_logits) * mask).sum() / mask.sum())
    lines = [f"## Teacher caches: {title}, {len(items)} examples, vocabulary {teacher_logits.size(-1)}, "
             f"{divergence.name} at τ = {divergence.kd_temperature:g}; gradient on {len(chosen)} examples",
             "", f"Dense loss on the batch: {dense:.5f}.", "",
             "| policy | bytes/token | mean support | build s | mean tail mass | grad L1 error | bound | loss − dense |",
             "|---|---|---|---|---|---|---|---|"]
    common = (teacher, student, pad, items, divergence, data)
    with tempfile.TemporaryDirectory() as tmp:
        for number, policy in enumerate(policies):
            row = _policy_row(policy, *common, Path(tmp) / str(number), batch_size=batch_size)
            name = ", ".join(f"{k} = {v:g}" for k, v in policy.items())
            lines.append(f"| {name} | {row['bytes']:.0f} | {row['support']:.1f} | {row['seconds']:.1f} | "
                         f"{row['tail']:.2e} | {row['error']:.2e} | {row['bound']:.2e} | {row['loss'] - dense:+.2e} |")
        half = _policy_row({"epsilon": 1e-3}, *common, Path(tmp) / "fp16", dtype="float16", batch_size=batch_size)
        full = _policy_row({"epsilon": 1e-3}, *common, Path(tmp) / "fp32", batch_size=batch_size)
    lines += ["", f"float16 storage at ε = 1e-3: {half['bytes']:.0f} bytes/token against {full['bytes']:.0f} "
              f"(float32); loss {half['loss']:.6f} against {full['loss']:.6f} "
              f"(relative {abs(half['loss'] - full['loss']) / abs(full['loss']):.1e})."]
    return lines


def _qwen_vocabulary(toy: bool):
    """A Qwen2.5-0.5B-shaped teacher and student (2 layers, random weights) and random token examples."""
    from bench_gkd_step import QWEN_05B, QWEN_TOY, _build
    from distill.data.collate import Encoded
    from distill.models.tokenizer import build_tokenizer

    config = QWEN_TOY if toy else QWEN_05B
    with tempfile.TemporaryDirectory() as tmp:  # a tiny tokenizer lends its special ids
        tokenizer = build_tokenizer([f"{a} + {b} = {a + b}" for a in range(30) for b in range(30)], 120, tmp)
    teacher, student = _build(config, 2, tokenizer, 1).eval(), _build(config, 2, tokenizer, 0).eval()
    g = torch.Generator().manual_seed(0)
    low, vocab = len(tokenizer), config["vocab_size"]
    count, prompt, target = (8, 4, 4) if toy else (32, 32, 64)
    items = [Encoded(torch.randint(low, vocab, (prompt,), generator=g).tolist(),
                     torch.randint(low, vocab, (target,), generator=g).tolist() + [tokenizer.eos_token_id], index=i)
             for i in range(count)]
    return teacher, student, tokenizer.pad_token_id, items


def tcache_section(args) -> list[str]:
    """The testbed's trained tiny teacher (its distributions are peaked, as a trained model's), then a teacher with
    Qwen's 151 936-token vocabulary and random weights: nearly uniform, so an ε support needs almost the whole
    vocabulary and stops at k_max (1 024) with most of the mass in its tail."""
    teacher, student, tokenizer, items, divergence, label = _models(args.experiment, args.cache_dir)
    policies = POLICIES[::3] if args.toy else POLICIES
    lines = _table(f"{args.experiment} ({label})", teacher, student, tokenizer.pad_token_id, items[: args.examples],
                   divergence, policies, 32, 64)
    teacher, student, pad, items = _qwen_vocabulary(args.toy)
    lines += [""] + _table("Qwen2.5-0.5B-shaped, random weights, random tokens", teacher, student, pad, items,
                           divergence, policies, 4, 4)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="testbed_arith")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--cache-dir", default="outputs/cache")
    args = parser.parse_args()
    args.toy = False
    print("\n".join(tcache_section(args)))


if __name__ == "__main__":
    main()
