"""Models ready for a run: tiny presets built, hub models loaded, SFT bootstraps cached.

A preset with ``bootstrap.enabled`` is first trained by SFT on the task (a
teacher that does not exist yet, or an SFT-initialised student, as the GKD
and X-KD papers start from). The result is cached under
``<cache_dir>/bootstrap/<hash>`` where the hash covers everything that
changes the weights (model, task data, tokenizer, SFT recipe, bootstrap
seed) and nothing that does not (logging, device, evaluation settings).
Bootstraps take their own seed, not the run's: the seeds of a distillation
sweep then vary the distillation from one teacher and one starting student,
the protocol of the GKD and X-KD papers. Bootstrap runs are ordinary
training runs, so an interrupted one resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from distill.data.collate import encode
from distill.data.tasks import TaskSpec, format_examples, tokenizer_corpus
from distill.io import build_once
from distill.models.load import ModelSpec, build_tiny, fit_lengths, load_model, load_tokenizer
from distill.models.tokenizer import build_tokenizer
from distill.settings_keys import BOOTSTRAP_IGNORED
from distill.train.checkpoint import list_checkpoints
from distill.train.loop import Context, Trainer, TrainerSettings, resolve_device

log = logging.getLogger(__name__)

# Task fields that only affect evaluation: changing them must not retrain a teacher.
EVAL_ONLY_TASK_FIELDS = ("decoding", "max_eval_examples")


@dataclass(frozen=True)
class ModelSources:
    """Everything needed to materialise the models of a run."""

    task: TaskSpec
    train_records: list      # the run's labelled training data (after task.train_fraction and labeled_fraction)
    bootstrap_records: list  # the whole train split: tokenizer and the teacher's bootstrap
    val_records: list
    unlabeled_records: list  # the run's records past the labelled part: prompts only (task.labeled_fraction)
    student_records: list    # what an SFT-initialised student bootstraps on: the labelled part of the split
    tokenizer_vocab_size: int
    cache_dir: Path
    seed: int              # the run's seed: init of a student that is not bootstrapped
    bootstrap_seed: int    # init and data order of the SFT bootstraps
    bootstrap_trainer: dict
    trainer: TrainerSettings


def whole_split(task: TaskSpec) -> TaskSpec:
    """The task as bootstraps see it: ``train_fraction`` subsets only the run's own data,
    so every point of a data-efficiency curve shares one teacher, tokenizer and start."""
    return replace(task, train_fraction=1.0)


def bootstrap_view(task: TaskSpec, role: str) -> TaskSpec:
    """The teacher comes from elsewhere and saw every label; a student starts from the labelled part only."""
    whole = whole_split(task)
    return replace(whole, labeled_fraction=1.0, start_examples=None) if role == "teacher" else whole


def tiny_tokenizer(sources: ModelSources, spec: ModelSpec | None = None):
    """The task's tiny tokenizer, or the preset's own (``tokenizer``: a vocabulary size or a path)."""
    own = spec.tokenizer if spec is not None else None
    if isinstance(own, str):
        return load_tokenizer(own)
    size = own if isinstance(own, int) else sources.tokenizer_vocab_size
    return build_tokenizer(tokenizer_corpus(sources.task, sources.bootstrap_records), size, sources.cache_dir)


def init_seed(spec: ModelSpec, sources: ModelSources) -> int:
    return sources.bootstrap_seed if spec.bootstrap["enabled"] else sources.seed


def initial_tokenizer(spec: ModelSpec, sources: ModelSources):
    """The tokenizer of ``initial_model`` without building or loading any weights."""
    return tiny_tokenizer(sources, spec) if spec.is_tiny else load_tokenizer(spec.pretrained)


def initial_model(spec: ModelSpec, sources: ModelSources):
    """(model, tokenizer) before any bootstrap: a fresh tiny preset or the pretrained weights."""
    if spec.is_tiny:
        tokenizer = tiny_tokenizer(sources, spec)
        return build_tiny(spec, tokenizer, init_seed(spec, sources)), tokenizer
    return load_model(spec.pretrained, spec.torch_dtype)


def bootstrap_key(spec: ModelSpec, sources: ModelSources, recipe: TrainerSettings, tokenizer, role: str) -> str:
    task = {k: v for k, v in asdict(bootstrap_view(sources.task, role)).items() if k not in EVAL_ONLY_TASK_FIELDS}
    if task.get("labeled_fraction") == 1.0:  # defaults leave the keys of earlier caches unchanged
        task.pop("labeled_fraction")
    for key in ("references_field", "start_examples"):  # unset: the keys of earlier caches stay
        if task.get(key) is None:
            task.pop(key, None)
    if task.get("generator") and task["generator"].get("shift", 0) is None:
        task["generator"] = {k: v for k, v in task["generator"].items() if k != "shift"}
    model = {"pretrained": spec.pretrained, "config": spec.config, "torch_dtype": spec.torch_dtype}
    semantic = {k: v for k, v in asdict(recipe).items() if k not in BOOTSTRAP_IGNORED}
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    identity = {"v": 1, "model": model, "task": task, "recipe": semantic, "vocab": vocab, "seed": sources.bootstrap_seed}
    threads = cpu_threads(recipe)
    if threads is not None:  # absent on GPUs: the keys of earlier GPU caches stay
        identity["cpu_threads"] = threads
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cpu_threads(recipe: TrainerSettings) -> int | None:
    """The intra-op thread count a bootstrap on the CPU trains with, None on a GPU. Its weights differ bit-wise
    between thread counts (summation order), and thousands of steps amplify that into another model: the count is
    part of which model a cache entry holds (docs/design.md, Offline first)."""
    return torch.get_num_threads() if resolve_device(recipe.device).type == "cpu" else None


def bootstrap_recipe(spec: ModelSpec, sources: ModelSources) -> TrainerSettings:
    overrides = {**sources.bootstrap_trainer, **(spec.bootstrap.get("trainer") or {})}
    return replace(sources.trainer, resume=True, resume_from=None, **overrides)


def prepare_model(spec: ModelSpec, role: str, sources: ModelSources):
    """(model, tokenizer) for ``role`` ('teacher' or 'student'), bootstrapping by SFT when asked."""
    if not spec.bootstrap["enabled"]:
        return initial_model(spec, sources)
    recipe = bootstrap_recipe(spec, sources)
    key = bootstrap_key(spec, sources, recipe, initial_tokenizer(spec, sources), role)  # weights only if we train
    run_dir = sources.cache_dir / "bootstrap" / f"{role}-{spec.name}-{key}"
    final = run_dir / "final"

    def build() -> None:
        if list_checkpoints(run_dir / "checkpoints"):
            log.info("resuming the interrupted SFT bootstrap of %s %s (%d steps) in %s", role, spec.name,
                     recipe.max_steps, run_dir)
        else:
            threads = cpu_threads(recipe)
            log.info("bootstrapping %s %s by SFT for %d steps%s (no cached model yet) -> %s", role, spec.name,
                     recipe.max_steps, f" on {threads} CPU thread(s)" if threads else "", run_dir)
        records = sources.bootstrap_records if role == "teacher" else sources.student_records
        run_sft(*initial_model(spec, sources), sources, records, recipe, run_dir, f"bootstrap {role}")

    if not build_once(final / "config.json", build):  # parallel jobs train one shared bootstrap once
        log.info("reusing cached SFT %s %s from %s", role, spec.name, final)
    return load_model(str(final), spec.torch_dtype)


def run_sft(model, tokenizer, sources: ModelSources, records: list, recipe: TrainerSettings, run_dir: Path,
            description: str = "bootstrap") -> None:
    from distill.methods.sft import SFT
    from distill.train.finalize import save_final

    encoder_decoder = bool(model.config.is_encoder_decoder)
    device = resolve_device(recipe.device)
    train = encode_records(sources.task, records, tokenizer, model)
    val = encode_records(sources.task, sources.val_records, tokenizer, model)
    ctx = Context(model.to(device), None, tokenizer, encoder_decoder, device, {})
    run_dir.mkdir(parents=True, exist_ok=True)
    hint = ("lower bootstrap_trainer.lr (or <teacher|student>.bootstrap.trainer.lr): the changed recipe trains a "
            f"new bootstrap from scratch; this one stays in {run_dir}")
    trainer = Trainer(SFT(), ctx, train, val, recipe, run_dir, sources.bootstrap_seed, None, {"bootstrap": asdict(recipe)},
                      diverged_hint=hint, description=description)
    summary = trainer.run()
    save_final(run_dir, model, tokenizer, summary)


def encode_records(task: TaskSpec, records: list, tokenizer, model, prompts_only: bool = False):
    """Encoded examples; with ``prompts_only`` the targets are dropped (unlabelled prompts: EOS, no reference)."""
    examples = format_examples(task, records, bool(model.config.is_encoder_decoder))
    if prompts_only:
        examples = [replace(e, target="") for e in examples]
    items = encode(tokenizer, examples, *fit_lengths(model, task.max_source_length, task.max_target_length))
    return [replace(item, reference=None) for item in items] if prompts_only else items
