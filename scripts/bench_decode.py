"""scripts/bench.py section 9: on-policy decoding against its own limit, side by side in one run.

For a model and a batch of B prompts (P tokens each, left-padded as training pads them), N new tokens sampled at
temperature 1 (no EOS can end a row early: every side makes exactly B·N tokens), tokens/s of
  * ours  — distill.models.sampling.decode, the loop every on-policy method samples with (keyed Gumbel-max
            noise per row, as training draws it);
  * HF    — ``model.generate(do_sample=True, top_k=0, top_p=1)`` with its dynamic KV cache;
  * limit — the same model's cached one-token forward for the same batch, timed alone, N times after the same
            prefill: what decoding would cost if choosing each token were free.
Ratios: ours / limit (target ≥ 0.8 at B ≥ 8) and ours / HF; the share of our step spent outside the forward is
1 − ours/limit (the noise, the argmax, the bookkeeping); the last column times choosing the tokens alone (the
keyed noise and the argmax over the vocabulary), as a share of our decoding time. Models: the tiny preset's student shape and a
Qwen2.5-0.5B-shaped one (``--layers`` layers, random weights). Medians of ``repeats`` timings, sides alternating.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench_gkd_step import QWEN_05B, QWEN_TOY

TINY = {"model_type": "gpt2", "n_embd": 128, "n_layer": 2, "n_head": 4, "vocab_size": 432, "n_positions": 512}
TINY_TOY = {**TINY, "n_embd": 32, "vocab_size": 128}


def _model(config: dict, layers: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(config)
    kind = config.pop("model_type")
    if kind == "qwen2":
        config["num_hidden_layers"] = layers
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **config)).eval()


def _prompts(vocab: int, batch: int, length: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    attention = torch.ones_like(ids)
    for row in range(0, batch, 2):  # every other prompt a quarter shorter: left padding, as in training
        attention[row, : length // 4] = 0
        ids[row, : length // 4] = 0
    return {"input_ids": ids, "attention_mask": attention}


@torch.no_grad()
def _ours(model, prompts, new: int) -> None:
    from distill.models.keyed_random import row_keys
    from distill.models.sampling import decode

    keys = row_keys(0, 0, torch.arange(prompts["input_ids"].size(0)))
    decode(model, prompts, new, eos_id=-1, pad_id=0, sampling_temperature=1.0, keys=keys)


@torch.no_grad()
def _hf(model, prompts, new: int) -> None:
    model.generate(**prompts, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=new,
                   min_new_tokens=new, pad_token_id=0, eos_token_id=None)


@torch.no_grad()
def _limit(model, prompts, new: int) -> float:
    """Seconds of ``new`` cached one-token forwards after the prefill (the prefill itself excluded)."""
    from distill.models.sampling import start_cache

    cache = start_cache(model, prompts, new)
    token = cache.logits.argmax(-1)
    started = time.perf_counter()
    for _ in range(new):
        cache.step(token)
    return time.perf_counter() - started


def _prefill(model, prompts) -> float:
    from distill.models.sampling import start_cache

    started = time.perf_counter()
    with torch.no_grad():
        start_cache(model, prompts, 1)
    return time.perf_counter() - started


def _pick_seconds(batch: int, vocab: int, new: int) -> float:
    """Seconds our loop spends choosing ``new`` tokens for ``batch`` rows alone: the keyed noise and the argmax."""
    from distill.models.keyed_random import row_keys
    from distill.models.sampling import _pick

    keys, scores = row_keys(0, 0, torch.arange(batch)), torch.randn(batch, vocab)
    _pick(scores, 1.0, None, keys, 0)
    started = time.perf_counter()
    for position in range(new):
        _pick(scores, 1.0, None, keys, position)
    return time.perf_counter() - started


def measure(model, batch: int, prompt: int, new: int, repeats: int) -> dict:
    prompts = _prompts(model.config.vocab_size, batch, prompt)
    times = {"ours": [], "HF": [], "limit": [], "pick": []}
    for _ in range(repeats + 1):  # the first round warms up
        prefill = _prefill(model, prompts)
        for side, fn in (("ours", _ours), ("HF", _hf)):
            started = time.perf_counter()
            fn(model, prompts, new)
            times[side].append(time.perf_counter() - started - prefill)  # decoding only, as the limit
        times["limit"].append(_limit(model, prompts, new))
        times["pick"].append(_pick_seconds(batch, model.config.vocab_size, new))
    return {side: batch * new / statistics.median(t[1:]) for side, t in times.items()}


def decode_section(args) -> list[str]:
    shapes = {"tiny (2×128, vocabulary 432)": TINY, f"Qwen2.5-0.5B-shaped ({args.layers} layers, vocabulary "
                                                      f"151 936)": QWEN_05B}
    if args.toy:
        shapes = {"tiny (toy)": TINY_TOY, "Qwen2 (toy)": QWEN_TOY}
    prompt, new = (8, 4) if args.toy else (64, 64)
    repeats = 1 if args.quick else 3
    lines = [f"## 9. On-policy decoding against its limit ({args.device}): {prompt}-token prompts, {new} new tokens "
             f"({new // 2} at Qwen's vocabulary) sampled at T = 1, tokens/s (median of {repeats})", "",
             "| model | batch | ours | HF generate | limit (cached forward alone) | ours / limit | ours / HF | "
             "choosing tokens (noise + argmax), share of our step |", "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name, config in shapes.items():
        model = _model(config, args.layers).to(args.device)
        large = config["vocab_size"] > 100_000  # a Qwen-sized step takes ~0.1 s at batch 8 here: one batch size
        for batch in [2] if args.toy else [8] if large else [1, 8, 32]:
            r = measure(model, batch, prompt, new // 2 if large else new, repeats)
            lines.append(f"| {name} | {batch} | {r['ours']:.0f} | {r['HF']:.0f} | {r['limit']:.0f} | "
                         f"{r['ours'] / r['limit']:.2f} | {r['ours'] / r['HF']:.2f} | {r['ours'] / r['pick']:.0%} |")
            print(lines[-1], flush=True)
        del model
    return lines
