"""scripts/bench.py section 3: GKD end to end, distill vs TRL's GKDTrainer, same models and data.

The tiny decoder-only teacher and student are built once and saved; each
side loads the identical weights in its own process (alternating, so drift
in the machine's speed hits both) and trains GKD with λ=0.5, JSD(β=0.5),
sampling temperature 1, the same batch size, ``max_new_tokens`` and
learning rate, on the same arith examples. Whether a step is on- or
off-policy is a coin flip on both sides, so steps/s is λ-adjusted:
1 / (λ·median on-policy step + (1−λ)·median off-policy step). Peak memory is
the process's peak RSS (VmHWM), imports included on both sides.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_gkd_common import BETA, LMBDA, LR, TEMPERATURE, _summary  # noqa: F401 (re-exported)
from bench_process import isolated


def _prepare(folder: Path, max_train: int) -> None:
    from bench_setup import build

    _, _, ctx, train_data, label = build(["method=gkd"], "cpu", max_train)
    for name, model in (("student", ctx.student), ("teacher", ctx.teacher)):
        model.save_pretrained(folder / name)
        ctx.tokenizer.save_pretrained(folder / name)
    rows = [{"prompt_ids": item.prompt_ids, "target_ids": item.target_ids} for item in train_data]
    (folder / "data.json").write_text(json.dumps({"rows": rows, "teacher": label}))


def _ours(folder: Path, batch: int, max_new_tokens: int, steps: int, warmup: int, queue, opts=None) -> None:
    """Our GKD loop body. ``opts``: lmbda, fused_linear (auto | true | false, resolved as a run resolves it)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from distill.data.collate import Encoded
    from distill.methods.gkd import GKD
    from distill.models.forward import fused_linear_choice
    from distill.train.loop import Context, Trainer, TrainerSettings

    opts = {"lmbda": LMBDA, "fused_linear": "auto", "device": "cpu", "dtype": "float32", **(opts or {})}
    torch.manual_seed(0)
    seq2seq = AutoConfig.from_pretrained(folder / "student").is_encoder_decoder
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    device = torch.device(opts["device"])
    student = auto.from_pretrained(folder / "student").to(device)
    teacher = auto.from_pretrained(folder / "teacher").to(device).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(folder / "student")
    data = [Encoded(r["prompt_ids"], r["target_ids"]) for r in json.loads((folder / "data.json").read_text())["rows"]]
    divergence = {"name": "jsd", "beta": BETA, "normalize": False, "kd_temperature": 1.0, "chunk_size": 64, "skew": None}
    method = GKD(divergence, opts["lmbda"], False, TEMPERATURE, max_new_tokens, 1.0, "accuracy",
                 {"strategy": "greedy", "max_new_tokens": max_new_tokens}, 64)
    ctx = Context(student, teacher, tokenizer, seq2seq, device, {})
    ctx.fused_linear = fused_linear_choice(opts["fused_linear"], student, teacher)[0]
    precision = "bf16" if opts["dtype"] == "bfloat16" else "fp32"  # mixed precision on both sides
    settings = TrainerSettings(opts["device"], precision, steps, batch, 1, LR, 0.0, (0.9, 0.999), 0, "constant", 1.0, 1.0,
                               steps, steps, 1, steps, 1, False, False)
    trainer = Trainer(method, ctx, data, [], settings, Path(tempfile.mkdtemp()), 0, None, {})
    times, generation = [], []
    import distill.data.trajectories as trajectories

    student_samples, spent = trajectories.student_samples, [0.0]

    def timed_samples(*a, **k):  # the step's sampling (and its batch on the device), as TRL's side times its own
        start = time.perf_counter()
        out = student_samples(*a, **k)
        spent[0] += time.perf_counter() - start
        return out

    trajectories.student_samples = timed_samples
    for step in range(steps):
        spent[0] = 0.0
        start = time.perf_counter()
        totals = trainer.train_step(step)  # the body of Trainer.run between logging steps
        trainer._note_finite(step, totals)
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        times.append((bool(totals["frac_on_policy"] > 0), time.perf_counter() - start))
        generation.append(spent[0])
    queue.put({**_summary(times, warmup, opts["lmbda"], generation), "fused": ctx.fused_linear})


def _trl_collator(pad_id: int):
    def pad(rows, value, left=False):
        width = max(len(r) for r in rows)
        return torch.tensor([([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r))) for r in rows])

    def collate(examples):
        full = [e["prompt_ids"] + e["target_ids"] for e in examples]
        labels = [[-100] * len(e["prompt_ids"]) + e["target_ids"] for e in examples]
        prompts = [e["prompt_ids"] for e in examples]
        return {"input_ids": pad(full, pad_id), "attention_mask": pad([[1] * len(r) for r in full], 0),
                "labels": pad(labels, -100), "prompts": pad(prompts, pad_id, left=True),
                "prompt_attention_mask": pad([[1] * len(r) for r in prompts], 0, left=True)}

    return collate


def _trl(folder: Path, batch: int, max_new_tokens: int, steps: int, warmup: int, queue, opts=None) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    opts = {"lmbda": LMBDA, "device": "cpu", "dtype": "float32", **(opts or {})}
    lmbda = opts["lmbda"]
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_pretrained(folder / "student")
    teacher = AutoModelForCausalLM.from_pretrained(folder / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(folder / "student")
    rows = json.loads((folder / "data.json").read_text())["rows"]
    args = GKDConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                     max_steps=steps, learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0,
                     max_grad_norm=1.0, lmbda=lmbda, beta=BETA, temperature=TEMPERATURE, max_new_tokens=max_new_tokens,
                     save_strategy="no", report_to="none", logging_steps=steps, use_cpu=opts["device"] == "cpu",
                     seed=0, dataloader_num_workers=0, disable_dropout=True, bf16=opts["dtype"] == "bfloat16",
                     disable_tqdm=True, gradient_checkpointing=False)  # TRL's default is on (and then it samples
    # without a KV cache); ours has none: off, so that both sides do the same work
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows), data_collator=_trl_collator(tokenizer.pad_token_id))
    times, state = [], {"on": False, "start": 0.0}
    generate = trainer.generate_on_policy_outputs

    def flagged(*a, **k):
        state["on"] = True
        return generate(*a, **k)

    trainer.generate_on_policy_outputs = flagged

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            state["on"], state["start"] = False, time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append((state["on"], time.perf_counter() - state["start"]))

    trainer.add_callback(Timer())
    trainer.train()
    queue.put(_summary(times, warmup, lmbda))


def _table(title: str, med: dict) -> list[str]:
    """Rows per trainer, then the first (ours) over the last (TRL); the on-policy step split into generation and
    the rest where both sides timed their generation."""
    def cell(value):
        return "–" if value is None else f"{value:.3f}"

    def parts(m):
        gen = m.get("gen_s")
        return gen, None if gen is None else m["on_s"] - gen

    lines = [title, "", "| trainer | on-policy step s | off-policy step s | steps/s (λ-adjusted) | peak RSS MiB "
                        "| generation s per on-policy step | rest of that step s |", "|---|---|---|---|---|---|---|"]
    for side, m in med.items():
        gen, rest = parts(m)
        lines.append(f"| {side} | {m['on_s']:.3f} | {m['off_s']:.3f} | {m['steps_per_s']:.2f} | "
                     f"{m['peak_rss_mib']:.0f} | {cell(gen)} | {cell(rest)} |")
    ours, trl = list(med.values())[0], list(med.values())[-1]
    split = [(a / b if a is not None and b else None) for a, b in zip(parts(ours), parts(trl))]
    ratios = ["–" if r is None else f"{r:.2f}" for r in split]
    lines.append(f"| **ratio distill/TRL** | {ours['on_s'] / trl['on_s']:.2f} | {ours['off_s'] / trl['off_s']:.2f} "
                 f"| **{ours['steps_per_s'] / trl['steps_per_s']:.2f}×** | "
                 f"**{ours['peak_rss_mib'] / trl['peak_rss_mib']:.2f}** | {ratios[0]} | {ratios[1]} |")
    return lines


def trl_section(args, has_trl: bool) -> list[str]:
    if not has_trl:
        line = "## 3. GKD end to end vs TRL: skipped (`trl` not installed; `pip install -e .[bench]`)"
        print(line, flush=True)
        return [line]
    from bench_trl_distillation import _trl_distillation

    batch, max_new_tokens = (2, 4) if args.toy else (16, 64)
    steps, warmup, rounds = (2, 1, 1) if args.toy else (10, 2, 1) if args.quick else (24, 4, 3)
    folder = Path(tempfile.mkdtemp())
    _prepare(folder, 8 if args.toy else 512)
    label = json.loads((folder / "data.json").read_text())["teacher"]
    # GKDTrainer at GKD's λ = 0.5; DistillationTrainer has no λ (always on-policy): both sides at λ = 1 there
    sides = {"gkd": {"distill": (_ours, {}), "TRL GKDTrainer": (_trl, {})},
             "distillation": {"distill": (_ours, {"lmbda": 1.0}),
                              "TRL DistillationTrainer": (_trl_distillation, {"lmbda": 1.0})}}
    results = {table: {side: [] for side in runs} for table, runs in sides.items()}
    for _ in range(rounds):  # alternate the sides
        for table, runs in sides.items():
            for side, (target, opts) in runs.items():
                results[table][side].append(isolated(target, folder, batch, max_new_tokens, steps, warmup, opts=opts))
    med = {table: {side: {k: statistics.median(r[k] for r in runs if r[k] is not None) if runs[0][k] is not None
                          else None for k in runs[0]} for side, runs in tables.items()}
           for table, tables in results.items()}
    common = (f"JSD(β={BETA}), sampling temperature {TEMPERATURE}, batch {batch}, max_new_tokens {max_new_tokens}, "
              f"{steps} steps ({warmup} warm-up) × {rounds} alternating round(s); {label}, random-init tiny student")
    lines = _table(f"## 3. GKD end to end vs TRL GKDTrainer: λ={LMBDA}, {common}", med["gkd"]) + [""]
    lines += _table(f"## 3b. On-policy GKD end to end vs TRL DistillationTrainer: λ=1, {common}", med["distillation"])
    print("\n".join(lines), flush=True)
    return lines
