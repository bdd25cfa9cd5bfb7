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

from bench_trl import _ours, _run, _trl

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


def prepare(shape: str, layers: int, folder: Path) -> None:
    """Save the student, teacher, a tokenizer (for its special ids) and the random token data in ``folder``."""
    from distill.models.tokenizer import build_tokenizer

    student_cfg, teacher_cfg, student_layers, batch, prompt, new = SHAPES[shape]
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
    rows = [{"prompt_ids": torch.randint(low, 30_000, (prompt,), generator=g).tolist(),
             "target_ids": torch.randint(low, 30_000, (new,), generator=g).tolist()} for _ in range(batch * 8)]
    (folder / "data.json").write_text(json.dumps({"rows": rows}))


def _variants(shape: str, trl: bool, device: str, dtype: str) -> dict:
    common = {"lmbda": 1.0, "device": device, "dtype": dtype}
    variants = {"distill, fused (auto)": (_ours, {**common, "fused_linear": "auto"}),
                "distill, full logits": (_ours, {**common, "fused_linear": False})}
    if trl and not shape.startswith("T5"):
        variants["TRL GKDTrainer"] = (_trl, common)
    return variants


def gkd_step_section(args, trl: bool) -> list[str]:
    layers = args.layers
    steps, warmup = (2, 1) if args.quick else (4, 1)
    memory = "peak GPU MiB" if args.device == "cuda" else "peak RSS MiB"
    lines = [f"## 6. A whole GKD step at real shapes ({args.dtype}, {args.device}): random weights from the real "
             f"configs, {layers} layer(s) per model (T5-small: all 6), λ = 1 (on-policy), JSD(0.5), median of "
             f"{steps} steps after {warmup} warm-up", "",
             f"| shape | trainer | logits path | s/step | {memory} | memory vs first row | steps/s vs last row |",
             "|" + "---|" * 7]
    print("\n".join(lines), flush=True)
    for shape in SHAPES:
        folder = Path(tempfile.mkdtemp(prefix="distill-gkdstep-"))
        prepare(shape, layers, folder)
        batch, new = SHAPES[shape][3], SHAPES[shape][5]
        results = {}
        for name, (target, opts) in _variants(shape, trl, args.device, args.dtype).items():
            results[name] = _run(target, folder, batch, new, steps + warmup, warmup, opts=opts)
            print(f"  {shape} / {name}: {results[name]}", flush=True)
        first, last = next(iter(results.values())), list(results.values())[-1]
        key = "peak_gpu_mib" if args.device == "cuda" else "peak_rss_mib"
        for name, r in results.items():
            path = "fused" if r.get("fused") else "full logits"
            lines.append(f"| {shape} | {name.split(',')[0]} | {path} | {1 / r['steps_per_s']:.2f} | {r[key]:.0f} "
                         f"| {r[key] / first[key]:.2f} | {r['steps_per_s'] / last['steps_per_s']:.2f} |")
            print(lines[-1], flush=True)
        ratio = {n: (r[key] / last[key], r["steps_per_s"] / last["steps_per_s"]) for n, r in results.items()}
        lines.append(f"| {shape} | **fused vs {list(results)[-1]}** | | | | **{ratio[list(results)[0]][0]:.2f}** of its "
                     f"memory | **{ratio[list(results)[0]][1]:.2f}×** its steps/s |")
        print(lines[-1], flush=True)
    return lines
