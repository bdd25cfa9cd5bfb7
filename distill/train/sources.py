"""What a run's models and data come from: the run directory Hydra made, and the records each part trains on.

Shared by `distill train` and `distill eval` (which loads a teacher the way a run would), so neither entry point
imports the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from distill.train.bootstrap import ModelSources, encode_records, whole_split
from distill.train.loop import TrainerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceSettings:
    """What ``model_sources`` needs from a run's config, converted once by the entry point
    (``distill.config.source_settings``)."""

    tokenizer_vocab_size: int
    cache_dir: Path
    seed: int
    bootstrap_seed: int
    bootstrap_trainer: dict  # the SFT recipe's overrides of the trainer settings
    trainer: TrainerSettings


def run_dir() -> Path:
    """The directory Hydra made for this command (train or eval)."""
    return Path(HydraConfig.get().runtime.output_dir)


def model_sources(settings: SourceSettings, task) -> ModelSources:
    """The run's records, split into labelled and prompt-only by ``task.labeled_fraction`` (the first
    records of the whole split keep their targets), and what each bootstrap trains on. With
    ``task.start_examples`` = N the SFT-initialised student bootstraps on the first N records and the run
    trains on the records after them, every one labelled: all methods see the same data."""
    from distill.data.tasks import full_split, labeled_count, load_split, subset_split

    full = full_split(task, "train")  # read once: the run and the bootstraps take different prefixes
    whole = subset_split(whole_split(task), "train", full)
    if task.start_examples:  # the student's own SFT data first; the run's labelled data after it, disjoint
        first = task.start_examples
        run, student, labeled = subset_split(task, "train", full[first:]), whole[:first], None
    else:
        run, labeled = subset_split(task, "train", full), labeled_count(task, len(whole))
        student = whole[:labeled]
    return ModelSources(task=task, train_records=run[:labeled], bootstrap_records=whole,
                        val_records=load_split(task, "validation"),
                        unlabeled_records=run[labeled:] if labeled is not None else [], student_records=student,
                        tokenizer_vocab_size=settings.tokenizer_vocab_size, cache_dir=settings.cache_dir,
                        seed=settings.seed, bootstrap_seed=settings.bootstrap_seed,
                        bootstrap_trainer=settings.bootstrap_trainer, trainer=settings.trainer)


def training_items(task, sources: ModelSources, tokenizer, student, method) -> list:
    """The run's training examples as the method sees them before its setup: the labelled records, and the
    unlabelled prompts too for a method that learns from prompts alone. ``student`` only lends its config."""
    items = encode_records(task, sources.train_records, tokenizer, student)
    if sources.unlabeled_records and method.prompts_only:  # methods that learn from prompts alone use them all
        prompts = encode_records(task, sources.unlabeled_records, tokenizer, student, prompts_only=True)
        return [replace(item, index=i) for i, item in enumerate(items + prompts)]
    if sources.unlabeled_records:
        log.info("%s needs dataset targets: it trains on the %d labelled examples only (task.labeled_fraction=%g)",
                 type(method).__name__, len(items), task.labeled_fraction)
    return items
