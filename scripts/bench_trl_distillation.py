"""GKD end to end, distill vs TRL 1.16's stable ``DistillationTrainer``: the TRL side of that comparison.

``_trl_distillation`` is the counterpart of ``bench_trl._trl`` (the experimental ``GKDTrainer``): the same
saved student/teacher/tokenizer and rows from ``bench_trl._prepare``, the same settings (``LMBDA``, ``BETA``,
``TEMPERATURE``, ``LR``, batch size, ``max_new_tokens``, AdamW with constant LR, no weight decay, clipping at
1.0, dropout off, seed 0), ``trl.DistillationTrainer.train`` as the loop, each optimizer step timed from
``on_step_begin`` to ``on_step_end`` with whether the student generated in it, and ``bench_trl._summary``
put on the queue. Notes on the trainer itself : docs/performance.md, section 3.

β. TRL's generalized JSD uses the mixture m = β·p_teacher + (1−β)·q_student and the value
β·KL(p‖m) + (1−β)·KL(q‖m) (trl/kernels/chunked_divergence.py:_jsd_tile, :_jsd_kernel), which is our
``jsd`` exactly (distill/losses/divergences.py, M = βp + (1−β)q, p the teacher): TRL's β is our β, no
flip. Its endpoints are plain KLs, β=0 forward KL(p‖q) and β=1 reverse KL(q‖p); ours reaches them only with
``divergence.normalize=true`` (β ∈ (0, 1) is unnormalised on both sides, as here). ``TRL_BETA`` is that
identity, checked numerically on random logits with an asymmetric β (docs/performance.md, section 3).

What cannot be matched exactly:
  * λ. ``DistillationTrainer`` has no λ: it generates completions on every training step
    (``_prepare_inputs`` -> ``_generate_and_score_completions``; no ``lmbda`` in ``DistillationConfig``).
    With ``opts["lmbda"]`` < 1 this driver emulates GKD's mix: the coin is ours (``step_coin(0, step, λ,
    "gkd_on_policy")``, so both sides flip identically per step, unlike GKDTrainer's ``random.random()``), and
    on an off-policy step the dataset targets stand in for the sampled completions inside
    ``_generate_single_turn``; everything after it (padding, masks, backbones, chunked loss, backward) is
    TRL's own. ``opts["lmbda"] = 1.0`` is the stock trainer, untouched (compare with ``_ours`` at λ = 1).
  * Prompts. TRL reads a text or conversational ``prompt`` column and tokenizes it itself (chat template for
    conversations). Here the rows' token ids are handed over as they are (``_tokenize_prompts`` returns them),
    so both sides see the same ids and random-id data (bench_gkd_step) works; tokenization time is not counted.
  * Temperature. TRL has one ``temperature`` for sampling and for both distributions in the loss; ours keeps
    ``sampling_temperature`` (TEMPERATURE) and ``divergence.kd_temperature`` (1.0) apart. Equal only because
    TEMPERATURE = 1.0.
  * Loss kernel. TRL always computes the loss from hidden states through ``ChunkedDivergenceFunction``
    (tiles of 4096 tokens × 32768 vocabulary, fp32; on CPU a torch fallback that projects every completion
    position, padding included; JSD projects both heads twice forward, once more backward). It has no
    full-logits path, so ``opts["fused_linear"]`` has no counterpart; our side picks ``fused_linear=auto``.
  * Generation. HF ``generate`` (dynamic KV cache, top-k 0, top-p 1, stops on any id in the model's
    ``generation_config.eos_token_id`` plus the tokenizer's EOS), student left in train mode (dropout is
    disabled here, so the distribution is the same); ours is its own KV-cache loop in eval mode with the
    tokenizer's EOS. Sampling noise differs, hence completion lengths (a random-init student seldom stops).
  * Order of examples. TRL's ``RepeatSampler`` shuffles with seed 0; ours walks its own order. Same rows,
    other batches per step.
  * Gradient checkpointing. TRL's default is on (``_BaseConfig.gradient_checkpointing = True``); ours has
    none, so it is off here (``opts["gradient_checkpointing"]`` turns it on). ``bench_trl._trl`` leaves
    ``GKDConfig``'s default, i.e. on, which there also makes generation run without a KV cache.
  * Optimizer. transformers' default ``optim`` (torch AdamW, ε = 1e-8, fused on CUDA where available) vs
    ours ``torch.optim.AdamW`` with its defaults; same β's, LR, weight decay and clipping.
  * Step boundaries. TRL's step is ``on_step_begin`` -> ``on_step_end``: ``training_step`` (generation
    included), its metric gathering (``.item()`` syncs), clipping, optimizer, scheduler, ``zero_grad``; logging
    comes after ``on_step_end``, untimed. ``_ours`` times ``Trainer.train_step`` plus the same updates. The same
    boundaries as ``bench_trl._trl``.
  * Memory. TRL's kernel allocates two [min(N, 4096) × 32768] fp32 buffers (N = completion positions) whatever
    the vocabulary: on CUDA that counts in ``peak_gpu_mib`` in full; on CPU only touched pages count in RSS.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

from bench_gkd_common import BETA, LMBDA, LR, TEMPERATURE, _summary

TRL_BETA = BETA  # TRL's mixture is β·p_teacher + (1−β)·q_student, as ours: the same β, no 1 − β


def _trl_distillation(folder: Path, batch: int, max_new_tokens: int, steps: int, warmup: int, queue,
                      opts=None) -> None:
    """TRL ``DistillationTrainer`` on ``folder``'s models and rows. ``opts``: lmbda (emulated below 1, see the
    module docstring), device, dtype, gradient_checkpointing (default False, as ours)."""
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # _BaseTrainer pings the Hub otherwise
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DistillationConfig, DistillationTrainer

    from distill.models.keyed_random import step_coin

    opts = {"lmbda": LMBDA, "device": "cpu", "dtype": "float32", "gradient_checkpointing": False, **(opts or {})}
    lmbda = opts["lmbda"]
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_pretrained(folder / "student")
    teacher = AutoModelForCausalLM.from_pretrained(folder / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(folder / "student")
    rows = json.loads((folder / "data.json").read_text())["rows"]
    dataset = Dataset.from_list([{"prompt": r["prompt_ids"], "target_ids": r["target_ids"]} for r in rows])
    args = DistillationConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch,
                              gradient_accumulation_steps=1, max_steps=steps, learning_rate=LR,
                              lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, beta=TRL_BETA,
                              temperature=TEMPERATURE, top_p=1.0, top_k=0, max_completion_length=max_new_tokens,
                              save_strategy="no", report_to="none", logging_steps=steps,
                              use_cpu=opts["device"] == "cpu", seed=0, dataloader_num_workers=0, disable_dropout=True,
                              bf16=opts["dtype"] == "bfloat16", gradient_checkpointing=opts["gradient_checkpointing"],
                              disable_tqdm=True)
    state = {"on": False, "start": 0.0, "targets": None, "gen": 0.0}

    class Driver(DistillationTrainer):
        def _tokenize_prompts(self, prompts):
            return [list(p) for p in prompts], None, {}  # the rows carry token ids already

        def _generate_and_score_completions(self, inputs):
            on = step_coin(0, self.state.global_step, lmbda, "gkd_on_policy")
            state["targets"] = None if on else [list(x["target_ids"]) for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, has_tool_images=False):
            if state["targets"] is not None:  # emulated off-policy step: the dataset's outputs, not samples
                return state["targets"]
            state["on"], start = True, time.perf_counter()
            out = super()._generate_single_turn(prompt_ids, images, multimodal_fields, has_tool_images)
            state["gen"] += time.perf_counter() - start
            return out

    trainer = Driver(model=student, teacher_model=teacher, args=args, processing_class=tokenizer,
                     train_dataset=dataset)
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            state["on"], state["gen"], state["start"] = False, 0.0, time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append((state["on"], time.perf_counter() - state["start"]))
            generation.append(state["gen"])

    generation = []
    trainer.add_callback(Timer())
    trainer.train()
    queue.put(_summary(times, warmup, lmbda, generation))
