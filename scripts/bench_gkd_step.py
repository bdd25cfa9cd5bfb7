"""scripts/bench.py section 6: a whole GKD step at real shapes (issue 13), ours vs TRL's GKDTrainer, one run.

Models are built offline from the real models' configs (the values of their hub config.json, copied below;
fewer layers, ``--layers``), with random weights, saved once; each variant loads the same weights in a fresh
spawned process and runs GKD on the same random token data: B prompts of P tokens, ``max_new_tokens`` sampled
ones, on-policy every step (λ = 1, as the paper recipes), JSD(β = 0.5), sampling temperature 1, AdamW. The
loop body is the real one (bench_trl._ours: ``Trainer.train_step``, clipping, AdamW) or TRL's own
``GKDTrainer.train``. Peak RSS = the process's VmHWM (weights, optimizer state, imports: the same on every
side); s/step = median after one warm-up step.
  * Qwen2.5-0.5B-shaped student ← Qwen2.5-1.5B-shaped teacher (vocabulary 151 936): distill with
    ``fused_linear=auto`` (on at this vocabulary), distill with ``fused_linear=false`` (full logits, our
    chunked kernel), and TRL.
  * T5-small student ← T5-XL-shaped teacher (t5-3b widths), the ``paper_xsum`` shapes (micro-batch 8, source
    512 tokens, 64 new): distill fused vs full logits. TRL's GKDTrainer serves decoder-only models only (it
    feeds ``input_ids`` alone to both models), so it has no T5 row.
GPU: ``python scripts/bench.py --sections gkdstep --device cuda --dtype bfloat16`` (peak = max_memory_allocated).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from bench_process import isolated
from bench_trl import _ours, _trl

# Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-1.5B config.json (24 and 28 layers there).
QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
            "num_key_value_heads": 2, "vocab_size": 151_936, "max_position_embeddings": 32_768, "rope_theta": 1e6,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu"}
QWEN_15B = {**QWEN_05B, "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12}
# google-t5/t5-small and google-t5/t5-3b (our t5_xl preset) config.json (6 and 24 layers there).
T5_SMALL = {"model_type": "t5", "d_model": 512, "d_ff": 2048, "d_kv": 64, "num_heads": 8, "num_layers": 6,
            "vocab_size": 32_128, "feed_forward_proj": "relu", "tie_word_embeddings": True, "dropout_rate": 0.0}
T5_3B = {**T5_SMALL, "d_model": 1024, "d_ff": 16_384, "d_kv": 128, "num_heads": 32, "num_layers": 24}
# name: (student config, teacher config, layers kept from the student's, batch, prompt tokens, new tokens)
SHAPES = {
    "Qwen2.5-0.5B ← 1.5B": (QWEN_05B, QWEN_15B, None, 4, 256, 256),
    "T5-small ← T5-XL (paper_xsum)": (T5_SMALL, T5_3B, 6, 8, 512, 64),
}
# --toy: the same two kinds of model at a few thousand parameters (the section runs; its figures mean nothing)
QWEN_TOY = {**QWEN_05B, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 512, "max_position_embeddings": 64}
T5_TOY = {**T5_SMALL, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1, "vocab_size": 512}
TOY_SHAPES = {"Qwen2-shaped (toy)": (QWEN_TOY, {**QWEN_TOY, "hidden_size": 48}, None, 2, 8, 4),
              "T5-shaped (toy)": (T5_TOY, {**T5_TOY, "d_model": 48}, 1, 2, 8, 4)}


def _build(config: dict, layers: int, tokenizer, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = dict(config)
    kind = config.pop("model_type")
    depth = {"num_hidden_layers": layers} if kind == "qwen2" else {"num_layers": layers, "num_decoder_layers": layers}
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if kind == "t5":
        ids["decoder_start_token_id"] = tokenizer.pad_token_id
    cfg = AutoConfig.for_model(kind, **{**config, **depth, **ids})
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
    return auto.from_config(cfg)


def prepare(shape: str, layers: int, folder: Path, shapes: dict = SHAPES) -> None:
    """Save the student, teacher, a tokenizer (for its special ids) and the random token data in ``folder``."""
    from distill.models.tokenizer import build_tokenizer

    student_cfg, teacher_cfg, student_layers, batch, prompt, new = shapes[shape]
    texts = [f"{a} + {b} = {a + b}" for a in range(50) for b in range(50)]
    tokenizer = build_tokenizer(texts, 120, folder / "cache")
    for name, cfg, seed, depth in (("student", student_cfg, 0, student_layers or layers),
                                   ("teacher", teacher_cfg, 1, layers)):
        model = _build(cfg, depth, tokenizer, seed)
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        del model
    g = torch.Generator().manual_seed(0)
    low = len(tokenizer)  # ordinary ids above the special ones, inside both vocabularies
    high = min(30_000, student_cfg["vocab_size"], teacher_cfg["vocab_size"])
    rows = [{"prompt_ids": torch.randint(low, high, (prompt,), generator=g).tolist(),
             "target_ids": torch.randint(low, high, (new,), generator=g).tolist()} for _ in range(batch * 8)]
    (folder / "data.json").write_text(json.dumps({"rows": rows}))


def _variants(seq2seq: bool, trl: bool, device: str, dtype: str, fused="auto") -> dict:
    common = {"lmbda": 1.0, "device": device, "dtype": dtype}
    variants = {"distill, fused (auto)": (_ours, {**common, "fused_linear": fused}),
                "distill, full logits": (_ours, {**common, "fused_linear": False})}
    if trl and not seq2seq:  # TRL's trainers serve decoder-only models only
        from bench_trl_distillation import _trl_distillation

        variants["TRL GKDTrainer"] = (_trl, common)
        variants["TRL DistillationTrainer"] = (_trl_distillation, common)
    return variants


PATHS = {"TRL GKDTrainer": "full logits (TRL's loss)", "TRL DistillationTrainer": "from hidden states (TRL's chunks)"}


def _shape_rows(shape: str, results: dict, key: str) -> list[str]:
    """One row per variant (memory against the first, steps/s against the last), then ours fused against each
    TRL trainer."""
    failed = {name: r["failed"] for name, r in results.items() if "failed" in r}
    results = {name: r for name, r in results.items() if name not in failed}
    first, last = next(iter(results.values())), list(results.values())[-1]
    lines = [f"| {shape} | {name} | – | – | killed: {why.split(': ', 1)[-1]} | – | – |" for name, why in failed.items()]
    for name, r in results.items():
        path = PATHS.get(name, "fused" if r.get("fused") else "full logits")
        lines.append(f"| {shape} | {name.split(',')[0]} | {path} | {1 / r['steps_per_s']:.2f} | {r[key]:.0f} "
                     f"| {r[key] / first[key]:.2f} | {r['steps_per_s'] / last['steps_per_s']:.2f} |")
    others = [name for name in results if name.startswith("TRL")] or [list(results)[-1]]
    for name in others:
        lines.append(f"| {shape} | **fused vs {name}** | | | | **{first[key] / results[name][key]:.2f}** of its "
                     f"memory | **{first['steps_per_s'] / results[name]['steps_per_s']:.2f}×** its steps/s |")
    return lines


def gkd_step_section(args, trl: bool) -> list[str]:
    layers, shapes = args.layers, TOY_SHAPES if args.toy else SHAPES
    steps, warmup = (1, 1) if args.toy else (2, 1) if args.quick else (4, 1)
    memory = "peak GPU MiB" if args.device == "cuda" else "peak RSS MiB"
    lines = [f"## 6. A whole GKD step at real shapes ({args.dtype}, {args.device}): random weights from the real "
             f"configs, {layers} layer(s) per model (T5-small: all 6), λ = 1 (on-policy), JSD(0.5), median of "
             f"{steps} steps after {warmup} warm-up", "",
             f"| shape | trainer | logits path | s/step | {memory} | memory vs first row | steps/s vs last row |",
             "|" + "---|" * 7]
    print("\n".join(lines), flush=True)
    for shape in shapes:
        if shapes[shape][0]["model_type"].replace("qwen2", "qwen") not in args.shapes:
            continue
        folder = Path(tempfile.mkdtemp(prefix="distill-gkdstep-"))
        prepare(shape, layers, folder, shapes)
        batch, new = shapes[shape][3], shapes[shape][5]
        results = {}
        seq2seq = shapes[shape][0]["model_type"] == "t5"
        fused = True if args.toy else "auto"  # at toy vocabularies auto would choose full logits
        for name, (target, opts) in _variants(seq2seq, trl, args.device, args.dtype, fused).items():
            try:
                results[name] = isolated(target, folder, batch, new, steps + warmup, warmup, opts=opts)
            except RuntimeError as exc:  # a side killed (out of memory): a row that says so, not a lost section
                results[name] = {"failed": str(exc)}
            print(f"  {shape} / {name}: {results[name]}", flush=True)
        rows = _shape_rows(shape, results, "peak_gpu_mib" if args.device == "cuda" else "peak_rss_mib")
        lines += rows
        print("\n".join(rows), flush=True)
    return lines
