"""The training loop. It knows nothing about any method.

Per optimizer step: the method turns each micro-batch of the accumulation
window into the trajectories it trains on (dataset, teacher- or
student-generated); N is counted over the whole window after that; then each
micro-batch's loss terms are reduced with that N and back-propagated.
Besides token counts, a method may ask for other window totals: every
``sum/<name>`` entry of its trajectories is summed over the window and handed
back to each micro-batch as ``window/<name>`` (GKD+RL's reward baseline).
"""

from __future__ import annotations

import logging
import math
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.data.collate import Encoded, collate
from distill.errors import ConfigError, Interrupted, TrainingDiverged
from distill.fields import check_choice, check_count, check_field_types, check_range
from distill.io import read_manifest, remove_temporaries
from distill.methods.base import LOG_RECORDS, SUM_PREFIX, WINDOW_PREFIX
from distill.train import checkpoint as ckpt
from distill.train import distributed as D
from distill.train import resume
from distill.train.faults import fault, kill_point
from distill.train.loggers import MetricsLogger
from distill.train.progress import Progress
from distill.train.schedule import SCHEDULES, lr_factor, make_scheduler, micro_batches, step_indices
from distill.train.signals import StopSignals, signal_name
from distill.train.validation import validation_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerSettings:
    """Plain mirror of the ``trainer`` block of ``conf/train.yaml``; fields documented there."""

    device: str
    precision: str
    max_steps: int
    micro_batch_size: int
    grad_accum_steps: int
    lr: float
    weight_decay: float
    adam_betas: tuple[float, float]
    warmup_steps: int
    lr_schedule: str
    min_lr_ratio: float
    max_grad_norm: float
    log_every: int
    eval_every: int
    eval_batches: int
    save_every: int
    keep_checkpoints: int
    resume: bool
    progress: bool
    progress_interval: float = 30.0
    resume_from: str | int | None = None

    def __post_init__(self) -> None:
        check_field_types(self, "trainer")
        positive = ("max_steps", "micro_batch_size", "grad_accum_steps", "log_every", "eval_every", "eval_batches",
                    "save_every", "keep_checkpoints")
        for key in positive:
            check_count("trainer", key, getattr(self, key))
        check_choice("trainer", "precision", self.precision, ("fp32", "bf16"))
        check_choice("trainer", "lr_schedule", self.lr_schedule, SCHEDULES)
        check_device_name("trainer.device", self.device)
        check_range("trainer", "lr", self.lr, 0.0, low_open=True)
        check_range("trainer", "weight_decay", self.weight_decay, 0.0)
        for beta in self.adam_betas:
            check_range("trainer", "adam_betas", beta, 0.0, 1.0, high_open=True)
        check_range("trainer", "warmup_steps", self.warmup_steps, 0)
        check_range("trainer", "min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("trainer", "max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        check_range("trainer", "progress_interval", self.progress_interval, 0.0)


@dataclass
class Context:
    """What a method may use: models, tokenizer, device, caches. Built once per run."""

    student: torch.nn.Module
    teacher: torch.nn.Module | None
    tokenizer: Any
    encoder_decoder: bool
    device: torch.device
    extra_modules: dict[str, torch.nn.Module]
    cache_dir: Path | None = None
    seed: int = 0  # the run's seed and the current optimizer step key every random draw
    step: int = 0  # of a method (distill.models.keyed_random); the trainer sets both
    # Position of each item of the current micro-batch in the run's stream of examples (step · window +
    # slot): keys its samples, so a window holding one example twice draws two independent samples.
    stream_positions: list[int] | None = None
    # Losses from the output projection's input and weight, never full logits (distill.losses.fused_linear);
    # resolved from the `fused_linear` setting and what the models allow (distill.models.forward).
    fused_linear: bool = False
    # A `distill teacher-cache` serving the teacher's distributions (distill.data.teacher_cache.TeacherCache):
    # then ``teacher`` is None and no teacher runs (docs/design.md, Methods).
    teacher_cache: Any = None
    # A teacher with another tokenizer (distill.data.cross_tokenizer.CrossTokenizer), compared at aligned positions.
    cross: Any = None

    def collate(self, items: list[Encoded]) -> dict[str, torch.Tensor]:
        return _to_device(collate(items, self.tokenizer.pad_token_id, self.encoder_decoder), self.device)


DEVICE_NAME = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def check_device_name(key: str, name: str) -> None:
    """A device this project runs on, spelled as torch spells it (checked before anything loads)."""
    if not isinstance(name, str) or not DEVICE_NAME.match(name):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N (also mps, xpu), got {name!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is visible; use trainer.device=cpu or auto")
    return torch.device(name)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _window_totals(micro: list[dict[str, torch.Tensor]], dist_: D.Dist | None = None) -> dict[str, torch.Tensor]:
    """Token counts N per mask and the method's ``sum/`` totals, over the whole window of every rank
    (docs/design.md, Reduction).

    Counted after generation replaced the outputs. The ``sum/`` totals are put
    back into every micro-batch as ``window/<name>``.
    """
    dist_ = dist_ or D.Dist()
    keys = sorted({key for batch in micro for key in batch if key.endswith("loss_mask") or key.startswith(SUM_PREFIX)})
    totals = {key: dist_.sum(sum(b[key].sum() for b in micro if key in b)) for key in keys}
    counts = {key: value.clamp(min=1) for key, value in totals.items() if key.endswith("loss_mask")}
    for batch in micro:
        batch.update({WINDOW_PREFIX + key.removeprefix(SUM_PREFIX): value for key, value in totals.items()
                      if key.startswith(SUM_PREFIX)})
    return counts


class Trainer:
    """Runs the optimizer steps of one run directory; the caller holds the directory (lock or build lock)."""

    def __init__(self, method, ctx: Context, train_data: list[Encoded], val_data: list[Encoded],
                 settings: TrainerSettings, run_dir: Path, seed: int, logger_settings: dict | None, config: dict,
                 plan: resume.ResumePlan | None = None, diverged_hint: str | None = None, description: str = "train",
                 dist_: D.Dist | None = None):
        self.method, self.ctx, self.settings = method, ctx, settings
        self.dist = dist_ or D.Dist()  # this process's place in a multi-process job (rank 0 alone writes)
        self.train_data, self.val_data = train_data, val_data
        self.run_dir, self.seed = run_dir, seed
        ctx.seed = seed
        params = list(ctx.student.parameters()) + [p for m in ctx.extra_modules.values() for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, betas=tuple(settings.adam_betas))
        self.scheduler = make_scheduler(self.optimizer, settings.warmup_steps, settings.max_steps, settings.lr_schedule, settings.min_lr_ratio)
        self.ckpt_dir = run_dir / "checkpoints"
        for leftover in (remove_temporaries(run_dir) + remove_temporaries(self.ckpt_dir)) if self.dist.main else []:
            log.info("removed %s, left by an interrupted write", leftover)
        self.previous_seconds = 0.0  # training time of earlier sessions of this run (resumes)
        self.diverged_hint = diverged_hint  # how to continue after a divergence, when not trainer.resume_from
        self.description = description  # what progress lines call this run
        if plan is None:  # a run without a command of its own (bootstraps): plan where it starts here
            plan = resume.plan_start(settings.resume, settings.resume_from, self.ckpt_dir,
                                     resume.optimizer_signature(settings))
        if self.dist.main:
            resume.apply(plan, self.ckpt_dir)
        self.start_step, self.branch_from = self._maybe_resume(plan)
        self._bad_step = torch.tensor(-1, device=ctx.device)  # first non-finite step (1-based), -1 = none
        self._last_loss = None  # the latest step's loss tensor, recorded in checkpoint manifests
        self._records: list[dict] = []
        self.logger = MetricsLogger(run_dir, logger_settings, config, self.start_step) if self.dist.main else None

    def _maybe_resume(self, plan: resume.ResumePlan) -> tuple[int, str | None]:
        source, branch = plan.source, plan.branch
        if source is None:
            torch.manual_seed(self.seed)
            return 0, branch
        step, method_state = ckpt.load_training_state(source, self.ctx.student, self.optimizer, self.scheduler,
                                                      self.ctx.extra_modules, self.dist)
        if method_state is not None:
            self.method.load_state_dict(method_state)  # OSD's replay buffer
        self._apply_settings(step)
        self.previous_seconds = float((read_manifest(source) or {}).get("train_seconds", 0.0))
        log.info("resuming from %s (step %d)", source, step)
        return step, branch

    def _apply_settings(self, step: int) -> None:
        """The optimizer state restores the saved lr, betas and weight decay: the current settings win
        (identical values on a plain resume; the new ones with ``trainer.resume_from``)."""
        s = self.settings
        factor = lr_factor(step, s.warmup_steps, s.max_steps, s.lr_schedule, s.min_lr_ratio)
        self.scheduler.base_lrs = [s.lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group.update(initial_lr=s.lr, lr=s.lr * factor, betas=tuple(s.adam_betas), weight_decay=s.weight_decay)

    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.settings.precision == "bf16")

    def _window_sizes(self) -> tuple[int, int]:
        """(examples per optimizer step on all ranks, per micro-batch); a method may fix them (OSD: its update
        interval). Global batch = micro_batch_size × grad_accum_steps × world size (docs/design.md,
        More than one process)."""
        if self.method.single_stream:
            return self.method.examples_per_step, self.method.examples_per_step
        micro = self.settings.micro_batch_size
        return micro * self.settings.grad_accum_steps * self.dist.world, micro

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimizer step over the accumulation window; returns unsynchronised loss tensors."""
        window, micro_size = self._window_sizes()
        indices = step_indices(step, window, len(self.train_data), self.seed, self.method.data_order,
                               self.method.stream_start)
        self.ctx.student.train()
        self.ctx.step = step
        decoding_teacher = self.ctx.teacher if self.method.teacher_decodes else None
        micro = []
        for chosen, positions in micro_batches(indices, step, self.dist.rank, self.dist.world, micro_size):
            items = [self.train_data[i] for i in chosen]
            self.ctx.stream_positions = positions
            with torch.no_grad(), self._autocast(), D.gathered(self.dist, self.ctx.student, decoding_teacher):
                micro.append(self.method.trajectories(items, self.ctx))
        # Per-example records a method reports (OSD: per-request acceptance), logged as they are.
        self._records = [record for batch in micro for record in batch.pop(LOG_RECORDS, [])]
        counts = _window_totals(micro, self.dist)
        totals: dict[str, torch.Tensor] = {}
        trained = [self.ctx.student, *self.ctx.extra_modules.values()]
        for index, batch in enumerate(micro):
            D.set_gradient_sync(self.dist, trained, index == len(micro) - 1)
            with self._autocast():
                out = self.method.loss_terms(batch, self.ctx)
                reduced = out.reduced(counts)
                loss = out.total(reduced)
                for name, value in reduced.items():
                    totals[f"loss/{name}"] = totals.get(f"loss/{name}", 0.0) + value.detach()
                for name, value in out.stats.items():
                    totals[name] = totals.get(name, 0.0) + value.detach().float() / len(micro)
            (loss * self.dist.grad_scale if self.dist.active else loss).backward()
            totals["loss"] = totals.get("loss", 0.0) + loss.detach()
        # Clip the student and each method-owned module (reward head) separately: a head whose
        # gradient is large early on must not shrink the student's update through a shared norm.
        clip = torch.nn.utils.clip_grad_norm_
        totals["grad_norm"] = D.local_value(clip(self.ctx.student.parameters(), self.settings.max_grad_norm))
        for name, module in self.ctx.extra_modules.items():
            totals[f"grad_norm/{name}"] = D.local_value(clip(module.parameters(), self.settings.max_grad_norm))
        totals["tokens"] = counts["loss_mask"]
        return totals

    def _note_finite(self, step: int, totals: dict) -> None:
        """Record on the device the first step whose loss or gradient norm is not finite (no host sync)."""
        finite = torch.isfinite(totals["loss"]) & torch.isfinite(totals["grad_norm"])
        if fault("nan", step + 1):
            finite = torch.zeros_like(finite)
        self._bad_step = torch.where(self._bad_step < 0, torch.where(finite, -1, step + 1), self._bad_step)
        self._last_loss = totals["loss"]

    def _diverged(self, reason: str) -> TrainingDiverged:
        """The error for a diverged run: which checkpoints are kept and how to continue from one."""
        kept = ckpt.list_checkpoints(self.ckpt_dir)
        if self.diverged_hint is not None:
            return TrainingDiverged(f"{reason}; {self.diverged_hint}")
        if not kept:
            return TrainingDiverged(f"{reason}; no checkpoint was written yet; lower trainer.lr and start again")
        described = ", ".join(f"{p.name} (max |w| {(read_manifest(p) or {}).get('max_abs_weight', float('nan')):.3g})"
                              for p in kept)
        return TrainingDiverged(f"{reason}; checkpoints kept: {described}; to continue with a lower lr, add "
                                f"trainer.lr={self.settings.lr / 10:g} trainer.resume_from={kept[-1].resolve()} "
                                "(or an older one: the newest may already hold exploded weights)")

    def _raise_if_diverged(self) -> None:
        """Called before anything is logged or saved: a diverged run never overwrites a good checkpoint.
        Every rank calls it at the same steps and learns of a divergence on any rank."""
        bad = int(self.dist.max(self._bad_step))
        if bad >= 0:
            raise self._diverged(f"loss became non-finite at step {bad}")

    def _optimizer_step(self, step: int) -> None:
        try:
            self.optimizer.step()
        except RuntimeError as exc:  # e.g. lr=1e38: the update itself overflows float32
            if "overflow" not in str(exc):
                raise
            raise self._diverged(f"the optimizer step overflowed at step {step + 1} "
                                 f"(trainer.lr={self.settings.lr:g})") from None
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self) -> dict:
        # The step itself never waits for the device: the token count and the "diverged" flag stay
        # on it and are read only at logging, validation and checkpoint steps.
        s, self._started = self.settings, time.perf_counter()
        self._throughput = (torch.zeros((), device=self.ctx.device), time.perf_counter())
        self.progress = Progress(s.progress and self.dist.main, s.max_steps, self.start_step, self.description, "step",
                                 s.progress_interval)
        with self.progress, StopSignals() as stop:
            for step in range(self.start_step, s.max_steps):
                totals = self.train_step(step)
                if fault("slow", step + 1):
                    time.sleep(1.0)
                self._note_finite(step, totals)
                self._optimizer_step(step)
                for record in self._records if self.dist.main else []:
                    self.logger.log({"step": step + 1, **record})
                saved = self._after_step(step + 1, totals)
                kill_point("kill", step + 1)
                if fault("term", step + 1):
                    stop.requested = stop.requested or signal.SIGTERM  # as if it had arrived during the step
                requested = self._agreed_stop(stop.requested)
                if requested and step + 1 < s.max_steps:  # after the last step: finish and export
                    self._stop(step + 1, saved, requested)
                self.progress.advance()
        self._close_logger()
        return {"steps": s.max_steps, "resumed_from_step": self.start_step, "train_seconds": self.train_seconds()}

    def _agreed_stop(self, requested: int | None) -> int | None:
        """A signal seen by any rank stops every rank at the same step boundary (one tiny all-reduce a step)."""
        if not self.dist.active:
            return requested
        return int(self.dist.max(torch.tensor(requested or 0, device=self.ctx.device))) or None

    def _close_logger(self) -> None:
        if self.logger is not None:
            self.logger.close()

    def train_seconds(self) -> float:
        """Training time of this run over all its sessions (resumes included)."""
        return self.previous_seconds + time.perf_counter() - self._started

    def _after_step(self, done: int, totals: dict) -> bool:
        """Log, validate and save as due; returns whether a checkpoint of step ``done`` was written."""
        s = self.settings
        tokens, since = self._throughput
        tokens += totals["tokens"]
        log_now, validate_now = done % s.log_every == 0, done % s.eval_every == 0
        save_now = done % s.save_every == 0 or done == s.max_steps
        if log_now or validate_now or save_now:
            self._raise_if_diverged()  # the one host sync, before anything is written
        if log_now or done == s.max_steps:
            self._log(done, self.dist.job_totals(totals), float(self.dist.sum(tokens)) / max(time.perf_counter() - since, 1e-9))
            tokens, since = torch.zeros((), device=self.ctx.device), time.perf_counter()
        self._throughput = (tokens, since)
        if validate_now or done == s.max_steps:
            self._validate(done)
        if save_now:
            self.save(done)
        return save_now

    def _stop(self, done: int, saved: bool, signum: int) -> None:
        """A signal arrived: save at this step boundary (unless just done) and stop with one line."""
        if not saved:
            self._raise_if_diverged()
            self.save(done)
        self._close_logger()
        path = self.ckpt_dir / f"step-{done:08d}"
        raise Interrupted(f"stopped by {signal_name(signum)} at step {done} of {self.settings.max_steps}; "
                          "checkpoint saved "
                          f"({path}); re-run the same command to resume", signum)

    def _log(self, step: int, totals: dict, tokens_per_s: float) -> None:
        if not self.dist.main:
            return
        record = {"step": step, "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": tokens_per_s}
        record.update({k: float(v) for k, v in totals.items() if k != "tokens"})
        self.logger.log(record)
        self.progress.note(loss=record["loss"], tokens_per_s=tokens_per_s)

    def _validate(self, step: int) -> None:
        if not self.val_data:
            return
        # Every rank runs it (an FSDP2 forward is a collective); rank 0 writes it.
        value = validation_loss(self.ctx, self.val_data, self.settings.micro_batch_size, self.settings.eval_batches,
                                self._autocast)
        if self.dist.main:
            self.logger.log({"step": step, "val/loss": value})

    def save(self, step: int) -> Path:
        """A checkpoint, only of finite weights after finite losses (the caller checked the losses)."""
        modules = [self.ctx.student, *self.ctx.extra_modules.values()]
        peak = D.peak_weight(self.dist, modules)
        if not math.isfinite(peak):
            raise self._diverged(f"weights became non-finite by step {step}")
        loss = float(self.dist.sum(self._last_loss)) if self._last_loss is not None else None
        # Under FSDP2 every rank takes part in consolidating the shards; rank 0 alone writes.
        full = D.consolidated(self.dist, self.ctx.student, self.ctx.extra_modules, self.optimizer)
        path = self.ckpt_dir / f"step-{step:08d}"
        if not self.dist.main:
            return path
        info = {"max_abs_weight": peak, "loss": loss, "branch_from": self.branch_from,
                "train_seconds": self.train_seconds(), **D.layout(self.dist)}
        origin = self.branch_from.split("@")[0] if self.branch_from else None
        method_state = self.method.state_dict()
        return ckpt.save_checkpoint(self.ckpt_dir, step, self.ctx.student, self.ctx.tokenizer, self.optimizer,
                                    self.scheduler, self.ctx.extra_modules, self.settings.keep_checkpoints, info, origin,
                                    method_state, full)
