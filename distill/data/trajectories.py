"""Trajectories a method trains on besides the dataset: student samples and cached teacher outputs."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import torch

from distill.data.collate import Encoded, collate_prompts, generated_batch
from distill.io import atomic_write_jsonl, read_jsonl
from distill.models.generation import Decoding, cut_at_eos, generate_ids
from distill.models.keyed_random import row_keys
from distill.models.load import weights_fingerprint
from distill.models.sampling import TeacherMixture, decode
from distill.train.progress import progress_bar

log = logging.getLogger(__name__)


def _prompts(ctx, items: list[Encoded]) -> dict[str, torch.Tensor]:
    return {k: v.to(ctx.device, non_blocking=True) for k, v in
            collate_prompts(items, ctx.tokenizer.pad_token_id, ctx.encoder_decoder).items()}


def _generate(model, ctx, items: list[Encoded], decoding: Decoding, keys: torch.Tensor | None = None) -> list[list[int]]:
    """``model``'s continuations of ``items`` (``num_samples`` per prompt, in order), EOS kept when produced."""
    was_training = model.training
    model.eval()  # no dropout while decoding
    new = generate_ids(model, _prompts(ctx, items), decoding, ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id,
                       keys=keys)
    model.train(was_training)
    pad, eos = ctx.tokenizer.pad_token_id, ctx.tokenizer.eos_token_id
    return [_strip_padding(row, pad, eos) for row in cut_at_eos(new, eos)]


def _strip_padding(row: list[int], pad_id: int, eos_id: int) -> list[int]:
    if row and row[-1] == eos_id:
        return row
    while row and row[-1] == pad_id:
        row = row[:-1]
    return row or [eos_id]  # an empty continuation still ends the sequence


def _view_aligned(values: torch.Tensor, prompts: dict[str, torch.Tensor], encoder_decoder: bool) -> torch.Tensor:
    """Per generated position [B, T, ...] -> the target-aligned view's columns (``distill.models.forward``).

    Decoder-only view row k predicts input token k+1 and outputs start at input column P,
    so generated position t sits at view column P − 1 + t.
    """
    if encoder_decoder:
        return values
    width = prompts["input_ids"].size(1) - 1
    return torch.cat([values.new_zeros(values.size(0), width, *values.shape[2:]), values], 1)


def _sample_batch(ctx, items: list[Encoded], max_new_tokens: int, sampling_temperature: float,
                  mixture_of: float | None = None) -> dict[str, torch.Tensor]:
    student, eos, pad = ctx.student, ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id
    prompts = _prompts(ctx, items)
    mixture = None
    if mixture_of is not None:
        mixture = TeacherMixture(ctx.teacher, prompts, mixture_of, sampling_temperature, max_new_tokens)
    # Each example's noise is keyed by (seed, step, example): samples do not depend on the batch split.
    keys = row_keys(ctx.seed, ctx.step, [item.index for item in items], device=ctx.device)
    was_training = student.training
    student.eval()  # no dropout while sampling the policy
    new = decode(student, prompts, max_new_tokens, eos, pad, sampling_temperature, mixture, keys=keys)
    student.train(was_training)
    batch = generated_batch(prompts, new, eos, pad, ctx.encoder_decoder)
    if mixture is not None:
        length = new.size(1)
        batch["teacher_logits"] = _view_aligned(mixture.logits(length), prompts, ctx.encoder_decoder)
        log_q, log_p = mixture.sampled(length)
        batch["sample_log_q"] = _view_aligned(log_q, prompts, ctx.encoder_decoder)
        batch["sample_log_p"] = _view_aligned(log_p, prompts, ctx.encoder_decoder)
    return batch


def student_samples(ctx, items: list[Encoded], max_new_tokens: int, sampling_temperature: float) -> dict[str, torch.Tensor]:
    """The batch of on-policy outputs y ~ q_θ(·|x) (no gradient through sampling), built on the device."""
    return _sample_batch(ctx, items, max_new_tokens, sampling_temperature)


def mixture_samples(ctx, items: list[Encoded], max_new_tokens: int, sampling_temperature: float,
                    teacher_mix: float) -> dict[str, torch.Tensor]:
    """MiniLLM's batch: y ~ (1−α)·q_T + α·p_T per token, with the teacher's logits kept from sampling.

    The teacher advances with its own KV cache while the outputs are sampled;
    that is the batch's one teacher pass (``teacher_logits`` is filled in).
    ``sample_log_q`` / ``sample_log_p`` are the sampling policy's log q_T(y_t)
    and log p_T(y_t), from the student in eval mode.
    """
    return _sample_batch(ctx, items, max_new_tokens, sampling_temperature, mixture_of=teacher_mix)


def teacher_outputs(ctx, items: list[Encoded], decoding: Decoding, batch_size: int, progress: bool) -> list[Encoded]:
    """SeqKD targets: the teacher's outputs for every prompt, generated once and cached on disk.

    The cache key is (a hash of the teacher's weights in their dtype, every
    prompt's token ids, the decoding settings, EOS/pad ids), so it is shared by
    runs and methods that agree on those and never reused for a retrained
    teacher at the same path, a task split or a decoding that differs. With
    ``num_samples`` = k > 1 each prompt gets k outputs, in order (k·n items);
    sampled outputs are keyed per (prompt, sample), so the cache is a pure
    function of its key. Items keep the dataset's ``reference``.
    """
    k = decoding.num_samples
    key = {"teacher": weights_fingerprint(ctx.teacher), "decoding": asdict(decoding),
           "eos": ctx.tokenizer.eos_token_id, "pad": ctx.tokenizer.pad_token_id, "v": 2}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for item in items:
        digest.update(json.dumps(item.prompt_ids).encode())
    path = Path(ctx.cache_dir) / "teacher_outputs" / f"{digest.hexdigest()[:20]}.jsonl"
    if path.exists():
        log.info("reusing cached teacher outputs %s", path)
        outputs = [r["ids"] for r in read_jsonl(path, required_fields=("ids",))]
    else:
        log.info("generating teacher outputs for %d prompts (%s) -> %s", len(items), decoding.name, path)
        outputs = []
        with progress_bar(progress, total=len(items), description="teacher outputs") as advance:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                keys = None
                if decoding.strategy == "sample":  # row i·k + j: sample j of prompt i (repeat_interleave order)
                    indices = [start + i for i in range(len(chunk))]
                    keys = torch.cat([row_keys(0, j, [i], salt="teacher_outputs") for i in indices for j in range(k)])
                    keys = keys.to(ctx.device)
                outputs.extend(_generate(ctx.teacher, ctx, chunk, decoding, keys))
                for _ in chunk:
                    advance()
        atomic_write_jsonl(path, [{"ids": ids} for ids in outputs])
    return [replace(item, target_ids=outputs[i * k + j], index=i * k + j)
            for i, item in enumerate(items) for j in range(k)]


def teacher_forward(ctx, batch: dict[str, torch.Tensor], hidden: bool = False) -> None:
    """The batch's single teacher pass: its logits (and last hidden states) serve every term."""
    from distill.models.forward import token_view

    view = token_view(ctx.teacher, batch, output_hidden=hidden)
    batch["teacher_logits"] = view.logits
    if hidden:
        batch["teacher_hidden"] = view.hidden
