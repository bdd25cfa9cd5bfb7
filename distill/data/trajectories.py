"""Trajectories a method trains on besides the dataset: student samples and cached teacher outputs."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from filelock import FileLock

from distill.data.collate import Encoded, collate_prompts, generated_batch
from distill.io import atomic_write_jsonl, read_jsonl
from distill.models.generation import Decoding, cut_at_eos, generate_ids
from distill.models.keyed_random import row_keys, step_coin
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


def _sample_keys(ctx, items: list[Encoded]) -> torch.Tensor:
    """Each row's sampling noise, keyed by its position in the run's stream of examples (set by the
    training loop), else by (step, example index): samples do not depend on how a window is split."""
    if ctx.stream_positions is not None and len(ctx.stream_positions) == len(items):
        return row_keys(ctx.seed, -1, ctx.stream_positions, device=ctx.device)
    return row_keys(ctx.seed, ctx.step, [item.index for item in items], device=ctx.device)


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
    keys = _sample_keys(ctx, items)
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


def gkd_outputs(ctx, items: list[Encoded], lmbda: float, max_new_tokens: int,
                sampling_temperature: float) -> tuple[dict[str, torch.Tensor], bool]:
    """GKD's choice of outputs for one optimizer step: with probability λ the student's own samples, else the
    items' targets (dataset or teacher outputs). One coin per (seed, step), the same in every micro-batch and on
    every rank (docs/design.md, Reduction). Returns (batch, on_policy); ``batch["on_policy"]`` records it."""
    on_policy = step_coin(ctx.seed, ctx.step, lmbda, "gkd_on_policy")
    batch = student_samples(ctx, items, max_new_tokens, sampling_temperature) if on_policy else ctx.collate(items)
    batch["on_policy"] = torch.tensor(float(on_policy), device=ctx.device)
    return batch, on_policy


def mixture_samples(ctx, items: list[Encoded], max_new_tokens: int, sampling_temperature: float,
                    teacher_mix: float) -> dict[str, torch.Tensor]:
    """MiniLLM's batch: y ~ (1−α)·q_T + α·p_T per token, with the teacher's logits kept from sampling.

    The teacher advances with its own KV cache while the outputs are sampled;
    that is the batch's one teacher pass (``teacher_logits`` is filled in).
    ``sample_log_q`` / ``sample_log_p`` are the sampling policy's log q_T(y_t)
    and log p_T(y_t), from the student in eval mode.
    """
    return _sample_batch(ctx, items, max_new_tokens, sampling_temperature, mixture_of=teacher_mix)


def _prompt_key(prompt_ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(prompt_ids).encode()).hexdigest()[:16]


def _cache_path(ctx, decoding: Decoding) -> Path:
    """One file per (teacher weights as loaded, decoding, EOS/pad ids); entries are keyed per prompt."""
    key = {"teacher": weights_fingerprint(ctx.teacher), "decoding": asdict(decoding),
           "eos": ctx.tokenizer.eos_token_id, "pad": ctx.tokenizer.pad_token_id, "v": 3}
    return Path(ctx.cache_dir) / "teacher_outputs" / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}.jsonl"


def teacher_outputs(ctx, items: list[Encoded], decoding: Decoding, batch_size: int, progress: bool,
                    used: Callable[[int], set[int]] | None = None) -> list[Encoded]:
    """SeqKD targets: the teacher's outputs for the run's prompts, generated once and cached on disk.

    The cache is keyed by a hash of the teacher's weights in their dtype, the
    decoding settings and EOS/pad ids; inside it every output is keyed by its
    prompt's token ids (and sample number), so runs on other subsets or
    longer runs share it and generate only what is missing. With
    ``num_samples`` = k > 1 each prompt gets k outputs, in order (k·n items);
    sampled outputs are keyed per (prompt, sample), so the cache is a pure
    function of its key. ``used(k·n)`` names the positions the run will visit:
    only those prompts are generated (the others keep ``target_ids=None``).
    Items keep the dataset's ``reference``.
    """
    if ctx.teacher_cache is not None:  # the cache was built on these outputs: they come with it, no teacher runs
        return ctx.teacher_cache.with_targets(items)
    k, path = decoding.num_samples, _cache_path(ctx, decoding)
    wanted = used(len(items) * k) if used is not None else range(len(items) * k)
    prompts = sorted({position // k for position in wanted})
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # parallel sweep jobs generate each output once
        known = {(r["prompt"], r["sample"]): r["ids"] for r in read_jsonl(path, ("prompt", "sample", "ids"))} \
            if path.exists() else {}
        missing = [i for i in prompts if any((_prompt_key(items[i].prompt_ids), j) not in known for j in range(k))]
        log.info("teacher outputs for %d of %d prompts: %d cached, %d to generate (%s) -> %s", len(prompts),
                 len(items), len(prompts) - len(missing), len(missing), decoding.name, path)
        if missing:
            known.update(_generate_missing(ctx, [items[i] for i in missing], decoding, batch_size, progress))
            atomic_write_jsonl(path, [{"prompt": p, "sample": j, "ids": ids} for (p, j), ids in known.items()])
    return [replace(item, target_ids=known.get((_prompt_key(item.prompt_ids), j)), index=i * k + j)
            for i, item in enumerate(items) for j in range(k)]


def _generate_missing(ctx, items: list[Encoded], decoding: Decoding, batch_size: int,
                      progress: bool) -> dict[tuple[str, int], list[int]]:
    k, out = decoding.num_samples, {}
    with progress_bar(progress, total=len(items), description="teacher outputs", unit="prompt") as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            names = [_prompt_key(item.prompt_ids) for item in chunk]
            keys = None
            if decoding.strategy == "sample":  # row i·k + j: sample j of prompt i, keyed by the prompt itself
                keys = torch.cat([row_keys(0, j, [int(name, 16)], salt="teacher_outputs") for name in names
                                  for j in range(k)]).to(ctx.device)
            rows = _generate(ctx.teacher, ctx, chunk, decoding, keys)
            out.update({(name, j): rows[i * k + j] for i, name in enumerate(names) for j in range(k)})
            bar.advance(len(chunk))
    return out


SPARSE_KEYS = ("teacher_support_ids", "teacher_support_log_probs", "teacher_log_tail", "teacher_log_min",
               "teacher_shared_ids")  # the last: the support every position shares (another tokenizer's)


def teacher_forward(ctx, batch: dict[str, torch.Tensor], hidden: bool = False, fused: bool = False,
                    items: list[Encoded] | None = None, kd_temperature: float = 1.0, uld: str | None = None) -> None:
    """The batch's single teacher pass: its logits (and last hidden states: at the state that predicts y_t,
    and at y_t's own position) serve every term. ``fused`` (``ctx.fused_linear``): the input of its output
    projection instead of logits; the divergence forms the logits a chunk at a time (``teacher_target``).
    With a teacher cache (``ctx.teacher_cache``) no teacher runs: the cached sparse rows of ``items``. With another
    tokenizer (``ctx.cross``) the teacher reads the items' text in its own tokens, and its distributions at the
    aligned positions come as a sparse teacher over matched tokens (``aligned_loss_mask`` marks those positions)."""
    from distill.models.forward import token_view, view_targets

    if ctx.cross is not None:
        from distill.data.cross_tokenizer import cross_teacher

        if "generated" in batch:  # the student's own samples: their text is what the teacher reads
            width = batch["generated"].size(1)
            lengths = batch["loss_mask"][:, -width:].sum(1).tolist()
            items = [replace(item, target_ids=row[:n]) for item, row, n in
                     zip(items, batch["generated"].tolist(), lengths)]
        sparse, batch["aligned_loss_mask"], ranked = cross_teacher(ctx, batch, items, kd_temperature, uld)
        if ranked is not None:
            batch["teacher_uld"] = ranked
        _keep_sparse(batch, sparse)
        return
    if ctx.teacher_cache is not None:
        sparse = ctx.teacher_cache.sparse_teacher(items, *view_targets(ctx.student, batch))
        _keep_sparse(batch, sparse)
        return

    if fused:
        batch["teacher_head_input"] = token_view(ctx.teacher, batch, fused=True).head_input
        return
    view = token_view(ctx.teacher, batch, output_hidden=hidden)
    batch["teacher_logits"] = view.logits
    if hidden:
        batch["teacher_hidden"], batch["teacher_action_hidden"] = view.hidden, view.action_hidden


def _keep_sparse(batch: dict, sparse) -> None:
    """The sparse teacher's tensors into the batch (absent fields stay out: a batch holds tensors only)."""
    fields = (sparse.ids, sparse.log_probs, sparse.log_tail, sparse.log_min, sparse.shared_ids)
    batch.update((key, value) for key, value in zip(SPARSE_KEYS, fields) if value is not None)


def teacher_target(ctx, batch: dict[str, torch.Tensor]):
    """What ``divergence_term`` compares the student with: the teacher's logits, its fused view, or its cached
    sparse distributions (``distill.losses.sparse.SparseTeacher``)."""
    from distill.losses.sparse import SparseTeacher
    from distill.models.forward import TokenView, view_targets

    if SPARSE_KEYS[0] in batch:
        vocab = ctx.teacher_cache.vocab_size if ctx.teacher_cache is not None else ctx.cross.student_vocab
        ids, log_probs, log_tail, log_min, shared = (batch.get(key) for key in SPARSE_KEYS)
        return SparseTeacher(ids, log_probs, log_tail, log_min, vocab, shared)

    if "teacher_head_input" not in batch:
        return batch["teacher_logits"]
    head = ctx.teacher.get_output_embeddings().weight
    if hasattr(head, "full_tensor"):  # an FSDP2-sharded teacher resharded after its forward: gathered once per
        with torch.no_grad():         # micro-batch (it takes no gradient), never per chunk
            head = head.full_tensor()
    return TokenView(None, *view_targets(ctx.teacher, batch), head_input=batch["teacher_head_input"],
                     head_weight=head)
