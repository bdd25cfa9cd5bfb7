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
from distill.models.sampling import TeacherMixture, decode
from distill.train.progress import progress_bar

log = logging.getLogger(__name__)


def _prompts(ctx, items: list[Encoded]) -> dict[str, torch.Tensor]:
    return {k: v.to(ctx.device, non_blocking=True) for k, v in
            collate_prompts(items, ctx.tokenizer.pad_token_id, ctx.encoder_decoder).items()}


def _generate(model, ctx, items: list[Encoded], decoding: Decoding) -> list[Encoded]:
    """``items`` with their outputs replaced by ``model``'s continuations (EOS kept when produced)."""
    was_training = model.training
    model.eval()  # no dropout while decoding
    new = generate_ids(model, _prompts(ctx, items), decoding, ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id)
    model.train(was_training)
    rows = cut_at_eos(new, ctx.tokenizer.eos_token_id)
    pad = ctx.tokenizer.pad_token_id
    return [replace(item, target_ids=_strip_padding(row, pad, ctx.tokenizer.eos_token_id)) for item, row in zip(items, rows)]


def _strip_padding(row: list[int], pad_id: int, eos_id: int) -> list[int]:
    if row and row[-1] == eos_id:
        return row
    while row and row[-1] == pad_id:
        row = row[:-1]
    return row or [eos_id]  # an empty continuation still ends the sequence


def _sample_batch(ctx, items: list[Encoded], max_new_tokens: int, sampling_temperature: float,
                  mixture_of: float | None = None) -> dict[str, torch.Tensor]:
    student, eos, pad = ctx.student, ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id
    prompts = _prompts(ctx, items)
    mixture = None
    if mixture_of is not None:
        mixture = TeacherMixture(ctx.teacher, prompts, mixture_of, sampling_temperature, max_new_tokens)
    was_training = student.training
    student.eval()  # no dropout while sampling the policy
    new = decode(student, prompts, max_new_tokens, eos, pad, sampling_temperature, mixture)
    student.train(was_training)
    batch = generated_batch(prompts, new, eos, pad, ctx.encoder_decoder)
    if mixture is not None:
        teacher = mixture.logits(new.size(1))
        if not ctx.encoder_decoder:  # view row k predicts input token k+1; outputs start at column P
            width = prompts["input_ids"].size(1) - 1
            teacher = torch.cat([teacher.new_zeros(teacher.size(0), width, teacher.size(2)), teacher], 1)
        batch["teacher_logits"] = teacher
    return batch


def student_samples(ctx, items: list[Encoded], max_new_tokens: int, sampling_temperature: float) -> dict[str, torch.Tensor]:
    """The batch of on-policy outputs y ~ q_θ(·|x) (no gradient through sampling), built on the device."""
    return _sample_batch(ctx, items, max_new_tokens, sampling_temperature)


def mixture_samples(ctx, items: list[Encoded], max_new_tokens: int, sampling_temperature: float,
                    teacher_mix: float) -> dict[str, torch.Tensor]:
    """MiniLLM's batch: y ~ (1−α)·q_θ + α·p per token, with the teacher's logits kept from sampling.

    The teacher advances with its own KV cache while the outputs are sampled;
    that is the batch's one teacher pass (``teacher_logits`` is filled in).
    """
    return _sample_batch(ctx, items, max_new_tokens, sampling_temperature, mixture_of=teacher_mix)


def teacher_outputs(ctx, items: list[Encoded], decoding: Decoding, batch_size: int, progress: bool) -> list[Encoded]:
    """SeqKD targets: the teacher's outputs for every prompt, generated once and cached on disk.

    The cache key is (teacher weights, every prompt's token ids, decoding
    settings), so it is shared by runs and methods that agree on those and
    never reused across a different teacher, task split or decoding.
    """
    digest = hashlib.sha256(json.dumps({"teacher": ctx.teacher_id, "decoding": asdict(decoding)}, sort_keys=True).encode())
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
                outputs.extend(item.target_ids for item in _generate(ctx.teacher, ctx, chunk, decoding))
                for _ in chunk:
                    advance()
        atomic_write_jsonl(path, [{"ids": ids} for ids in outputs])
    return [replace(item, target_ids=ids) for item, ids in zip(items, outputs)]


def teacher_forward(ctx, batch: dict[str, torch.Tensor], hidden: bool = False) -> None:
    """The batch's single teacher pass: its logits (and last hidden states) serve every term."""
    from distill.models.forward import token_view

    view = token_view(ctx.teacher, batch, output_hidden=hidden)
    batch["teacher_logits"] = view.logits
    if hidden:
        batch["teacher_hidden"] = view.hidden
