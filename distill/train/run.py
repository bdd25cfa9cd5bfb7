"""`distill train`: the entry point that reads the composed config and runs one job."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distill import config as C
from distill.config import instantiate_method  # noqa: F401  (scripts and tests import it from here)
from distill.data.cross_tokenizer import CrossTokenizer
from distill.errors import ConfigError
from distill.eval.settings import decodings
from distill.io import atomic_write_text
from distill.models.forward import fused_linear_choice
from distill.models.load import check_pair, check_same_vocabulary, parameter_count
from distill.provenance import code_version
from distill.rundir import RunDir
from distill.settings_keys import OPTIMIZER_KEYS, RESUME_IGNORED
from distill.train import distributed as D
from distill.train import resume
from distill.train.bootstrap import ModelSources, encode_records, init_seed, prepare_model
from distill.train.finalize import save_final
from distill.train.loop import Context, Trainer, resolve_device
from distill.train.schedule import used_indices
from distill.train.sources import model_sources, run_dir, training_items
from distill.train.teacher_cache import open_for_run

log = logging.getLogger(__name__)



def _guard_resume(inputs: C.TrainInputs, directory: Path) -> None:
    """Refuse to continue a run dir that holds a different experiment (reads only)."""
    saved_path = directory / "run_config.yaml"
    if not (saved_path.exists() and inputs.trainer.resume):
        return
    ignored = RESUME_IGNORED + (OPTIMIZER_KEYS if inputs.trainer.resume_from is not None else ()) + \
        (("teacher_cache",) if inputs.teacher_cache is None else ())  # how a cache is built matters only with one
    mismatch = C.resume_mismatch(yaml.safe_load(saved_path.read_text()), inputs.resolved, ignored)
    if mismatch:
        raise ConfigError(f"{directory} holds a run with a different config: {mismatch}; use another hydra.run.dir, "
                          "trainer.resume=false (moves the earlier run aside) or, for optimiser settings, "
                          "trainer.resume_from=STEP")


def train(cfg: DictConfig) -> dict:
    """Hold the run dir, validate and load everything, and only then write: train, export, evaluate.
    Under a multi-process launcher every rank runs this; rank 0 alone holds the run dir and writes."""
    rank, world, _ = D.launcher_world()
    holder = RunDir(run_dir(), "train.log") if rank == 0 else D.Follower(run_dir())
    with holder as run:  # a refused command leaves the directory as it was
        inputs = replace(C.train_inputs(cfg, world), files=C.run_files(cfg))
        dist_ = D.setup(inputs.distributed, inputs.trainer.device, inputs.teacher_sharding)
        try:
            return _train(cfg, run, inputs, dist_)
        except RuntimeError as exc:  # a collective failed: one line naming the rank that stopped
            lost = D.lost_peer(exc, dist_)
            if lost is None:
                raise
            raise lost from None


def _train(cfg: DictConfig, run: RunDir, inputs: C.TrainInputs, dist_: D.Dist) -> dict:
    task, method, settings = inputs.task, inputs.method, inputs.trainer
    student_spec, teacher_spec = inputs.student, inputs.teacher
    check_pair(student_spec, teacher_spec if method.needs_teacher else None, task.max_target_length)
    if inputs.eval.after_train:
        check_pair(student_spec, None, max(d.max_new_tokens for d in decodings(task, inputs.eval)), "eval.max_new_tokens")
    _warn_short_warmup(settings)
    _guard_resume(inputs, run.path)
    plan = dist_.broadcast(resume.plan_start(settings.resume, settings.resume_from, run.path / "checkpoints",
                                             resume.optimizer_signature(settings)) if dist_.main else None)
    finished = None if plan.new_branch or plan.supersede else _finished(run.path, settings.max_steps)
    if finished is not None:  # re-running a finished command: nothing to train, nothing rewritten
        log.info("%s already finished its %d steps; nothing to train (trainer.resume=false starts afresh)",
                 run.path, settings.max_steps)
        return _evaluate_if_asked(cfg, inputs, run, finished) if dist_.main else finished
    started = time.perf_counter()
    job = _prepare(inputs, D.device_for(dist_, settings.device), dist_.world)
    if plan.source is not None:
        resume.check_compatible(plan.source, job.ctx.student)
        D.check_layout(dist_, plan.source)
    unfusable = "the method needs full logits" if not method.fuses_linear else \
        "ULD needs the student's full logits" if inputs.resolved["divergence"].get("uld") else None
    fused, why = fused_linear_choice(inputs.fused_linear, job.ctx.student, job.ctx.teacher, unfusable)
    run.accept(inputs.files, fresh=not settings.resume)
    log.info("student %s: %d parameters; %d train / %d validation examples", student_spec.name,
             parameter_count(job.ctx.student), len(job.train_data), len(job.val_data))
    D.wrap(dist_, job.ctx.student, job.ctx.teacher, job.ctx.extra_modules, job.ctx.device)
    job.ctx.fused_linear = fused
    log.info("losses %s (%s)", "from hidden states, fused with the output projection" if fused
             else "from full logits", why)
    trainer = Trainer(method, job.ctx, job.train_data, job.val_data, settings, run.path, inputs.seed,
                      _wandb(inputs.wandb, run.path, plan.new_branch) if dist_.main else None, inputs.resolved, plan,
                      dist_=dist_)
    summary = trainer.run()
    summary.update({"method": _choice("method"), "task": task.name, "student": student_spec.name,
                    "teacher": teacher_spec.name if job.ctx.teacher is not None else None,
                    "student_parameters": parameter_count(job.ctx.student),
                    "student_init": _model_id(job.ctx.student, student_spec, inputs.seed),
                    "teacher_id": _model_id(job.ctx.teacher, teacher_spec, init_seed(teacher_spec, job.sources)),
                    "wall_seconds": time.perf_counter() - started, "world_size": dist_.world,
                    "code": code_version()})
    weights = D.full_weights(dist_, job.ctx.student)  # FSDP2: every rank takes part; rank 0 writes
    if not dist_.main:
        return summary
    save_final(run.path, job.ctx.student, job.ctx.tokenizer, summary, weights)
    log.info("finished: %s", run.path / "final")
    return _evaluate_if_asked(cfg, inputs, run, summary)


@dataclass
class _Job:
    ctx: Context
    train_data: list
    val_data: list
    sources: ModelSources


def _prepare(inputs: C.TrainInputs, device_name: str, world: int = 1) -> _Job:
    """Models (bootstrapped if asked), data and the method's own setup; nothing is written to the run dir."""
    method, settings, seed = inputs.method, inputs.trainer, inputs.seed
    sources = model_sources(inputs.sources, inputs.task)
    student, tokenizer = prepare_model(inputs.student, "student", sources)
    teacher = None
    cross = None
    if method.needs_teacher and inputs.teacher_cache is None:  # a cache serves the teacher: it is never loaded
        teacher, teacher_tokenizer = prepare_model(inputs.teacher, "teacher", sources)
        if inputs.cross_tokenizer:
            cross = CrossTokenizer.build(teacher_tokenizer, tokenizer)
            log.info("cross-tokenizer KD: %d of the teacher's %d tokens mapped onto %d of the student's %d",
                     cross.teacher_ids.numel(), len(teacher_tokenizer), cross.student_ids.unique().numel(),
                     len(tokenizer))
        else:
            check_same_vocabulary(teacher_tokenizer, tokenizer)
    device = resolve_device(device_name)
    ctx = Context(student.to(device), _frozen(teacher, device), tokenizer, bool(student.config.is_encoder_decoder),
                  device, extra_modules={}, cache_dir=sources.cache_dir, seed=seed, cross=cross)
    train_data = training_items(inputs.task, sources, tokenizer, student, method)
    val_data = encode_records(inputs.task, sources.val_records, tokenizer, student)
    if inputs.teacher_cache is not None:
        ctx.teacher_cache = open_for_run(inputs, sources, ctx, train_data)
    # Method-owned trajectories (teacher outputs) and modules (reward head). Modules a method creates (X-KD's
    # heads) start from the run's seed, not from whatever state earlier jobs of this process (a parallel sweep's
    # worker) left the global generator in; the trainer seeds again before step 1.
    torch.manual_seed(seed)
    window = settings.micro_batch_size * settings.grad_accum_steps * world  # the global batch
    used = lambda n: used_indices(settings.max_steps, window, n, seed)  # noqa: E731
    train_data = method.setup(ctx, train_data, settings.progress, used)
    return _Job(ctx, train_data, val_data, sources)


def _warn_short_warmup(settings) -> None:
    if settings.warmup_steps >= settings.max_steps:
        log.warning("trainer.warmup_steps=%d >= trainer.max_steps=%d: the learning rate never reaches trainer.lr=%g "
                    "(it peaks at %.3g); lower trainer.warmup_steps", settings.warmup_steps, settings.max_steps,
                    settings.lr, settings.lr * settings.max_steps / max(settings.warmup_steps, 1))


def _finished(directory: Path, max_steps: int) -> dict | None:
    """The summary of a run that already completed ``max_steps`` with a final/ that verifies, else None."""
    from distill.io import verify_manifest

    path = directory / "summary.json"
    if not (path.is_file() and (directory / "final").is_dir()):
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if summary.get("steps") != max_steps or verify_manifest(directory / "final") is not None:
        return None
    return summary


def _evaluate_if_asked(cfg: DictConfig, inputs: C.TrainInputs, run: RunDir, summary: dict) -> dict:
    """The evaluation entry point reads its own settings from the config (``distill.eval.entry``)."""
    if inputs.eval.after_train:
        from distill.eval.entry import evaluate_after_train

        if not run.accepted:
            run.accept(inputs.files, fresh=False)
        summary["eval"] = evaluate_after_train(cfg)
    return summary


def _wandb(wandb: dict | None, directory: Path, new_line: bool) -> dict | None:
    """W&B settings; without an explicit id, one per line of training: a resumed run keeps its id (stored in
    ``wandb_id``), a fresh start or a ``trainer.resume_from`` branch gets a new one, so histories never mix."""
    settings = dict(wandb) if wandb else None
    if settings and not settings["id"]:
        stored = directory / "wandb_id"
        if new_line or not stored.exists():
            atomic_write_text(stored, uuid.uuid4().hex[:16] + "\n")
        settings["id"] = stored.read_text().strip()
    return settings


def _frozen(teacher, device):
    """The teacher never trains: eval mode (no dropout) and no gradients."""
    if teacher is None:
        return None
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def _model_id(model, spec, seed: int) -> str | None:
    """Names a model's weights for cache keys: its load path, else its preset and seed."""
    if model is None:
        return None
    path = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")
    return path or f"{spec.name}:{hashlib.sha256(repr(spec).encode()).hexdigest()[:12]}:seed{seed}"


def _choice(group: str) -> str:
    return HydraConfig.get().runtime.choices[group]
