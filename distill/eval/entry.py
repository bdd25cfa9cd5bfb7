"""Entry points of evaluation: they read the config and call ``distill.eval.run``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distill import config as C
from distill.data.tasks import load_split
from distill.eval.run import EvalSettings, evaluate
from distill.eval.settings import decodings
from distill.eval.table import print_table
from distill.models.load import fit_lengths, load_model, resolve_checkpoint
from distill.rundir import RunDir
from distill.train.loop import resolve_device

log = logging.getLogger(__name__)


def settings(cfg: DictConfig) -> EvalSettings:
    return C.eval_settings(cfg.eval)


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """One checkpoint, or every run's final/ under a sweep directory (each written beside its run). Settings,
    data, checkpoint and lengths are checked before anything is written; a failed or interrupted evaluation
    takes back what it wrote."""
    with RunDir(Path(HydraConfig.get().runtime.output_dir), "eval.log", what="distill eval", rollback=True) as run:
        task, eval_settings = C.eval_inputs(cfg)
        device = resolve_device(cfg.device)
        records = load_split(task, eval_settings.split)  # missing or malformed data: refused here
        runs = sweep_runs(Path(cfg.ckpt).expanduser())
        if not runs:
            path = resolve_checkpoint(cfg.ckpt)
            warn_other_task(path, task.name)
            loaded = load_model(str(path))  # a checkpoint that does not load is refused before anything is written
            check_lengths(loaded[0], task, eval_settings)
            draft = _draft(eval_settings, task, loaded[1], loaded[0])
            run.accept(C.run_files(cfg, training=False), fresh=False)
            return _evaluate_one(cfg, task, eval_settings, path, run.path, loaded, draft, records, device)
        run.accept(C.run_files(cfg, training=False), fresh=False)
        variant = HydraConfig.get().job.override_dirname
        log.info("evaluating %d runs under %s", len(runs), cfg.ckpt)
        results = {}
        for run_path in runs:
            out_dir = Path(C.eval_dir(str(run_path / "final"), task.name, eval_settings.split, variant))
            results[str(run_path)] = _evaluate_one(cfg, task, eval_settings, run_path / "final", out_dir,
                                                   records=records, device=device)
        return results


def warn_other_task(path: Path, task: str) -> None:
    """A run evaluated on another task than it trained on is legitimate (transfer, shift) but easy to do by
    accident (``task`` defaults to arith): say so, with the override that evaluates its own task."""
    for config in (path / "run_config.yaml", path.parent / "run_config.yaml"):
        if config.is_file():
            trained = (yaml.safe_load(config.read_text()) or {}).get("task", {}).get("name")
            if trained and trained != task:
                log.warning("%s trained on task %s; evaluating it on task %s (task=%s and its generator settings "
                            "evaluate its own task)", path, trained, task, trained)
            return


def check_lengths(model, task, eval_settings: EvalSettings) -> None:
    """The longest decoding fits the model's positions (``eval.max_new_tokens``), before anything is written."""
    fit_lengths(model, task.max_source_length, max(d.max_new_tokens for d in decodings(task, eval_settings)))


def sweep_runs(path: Path) -> list[Path]:
    """Run directories with a final/ below ``path`` when ``path`` itself is not a checkpoint.

    Hidden directories (a run's ``.replaced/`` earlier runs, ``.tmp-*`` writes) are skipped.
    """
    if not path.is_dir() or any((c / "config.json").exists() for c in (path, path / "final", path / "student")):
        return []
    found = []
    for current, dirs, _ in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "final" in dirs and (Path(current) / "final" / "config.json").exists():
            found.append(Path(current))
    return sorted(found)


def _draft(eval_settings: EvalSettings, task, tokenizer, target=None):
    """(draft model, its path) for speculative evaluation, checked against the target's vocabulary, output layer
    and decoding before anything is written; else None."""
    spec = eval_settings.speculative or {}
    if spec.get("draft") is None:
        return None
    from distill.eval.run import check_speculative_decoding, decodings
    from distill.models.load import check_same_vocabulary
    from distill.models.speculative import check_draft_width

    check_speculative_decoding(decodings(task, eval_settings)[0])  # before anything is written
    path = resolve_checkpoint(spec["draft"])
    model, draft_tokenizer = load_model(str(path))
    check_same_vocabulary(tokenizer, draft_tokenizer, ("target", "draft"))
    if target is not None:
        check_draft_width(target, model, str(path))
    return model, str(path)


def _evaluate_one(cfg: DictConfig, task, eval_settings: EvalSettings, path: Path, out_dir: Path, loaded=None,
                  draft=None, records=None, device=None) -> dict:
    model, tokenizer = loaded or load_model(str(path))
    torch.manual_seed(cfg.seed)
    metrics = evaluate(model, tokenizer, task, eval_settings, out_dir, str(path), device or resolve_device(cfg.device),
                       *(draft or (None, None)), records=records)
    print_table([("model", str(path), metrics)], task.metric)
    for entry in metrics["by_decoding"]:
        if entry.get("strategy") == "speculative":
            matches = entry.get("matches_target")  # greedy only: sampled decodings are independent samples
            log.info("speculative decoding, k=%d: acceptance_rate %.3f (T = 1 overlap %.3f), accepted_fraction %.3f, "
                     "%.2f tokens per target forward, c %.3f, speedup_model %.2f, speedup_measured %.2f%s",
                     entry["num_proposals"], entry["acceptance_rate"], entry["overlap_t1"], entry["accepted_fraction"],
                     entry["tokens_per_target_forward"], entry["cost_ratio"], entry["speedup_model"],
                     entry["speedup_measured"], "" if matches is None else f", matches_target {matches:.3f}")
    log.info("wrote %s", out_dir / "metrics.json")
    return metrics


def evaluate_after_train(cfg: DictConfig) -> dict:
    """Score the run's final/ (and the teacher, with eval.compare_teacher) and print a table."""
    from distill.train.bootstrap import prepare_model
    from distill.train.sources import model_sources, run_dir

    task, eval_settings = C.task_spec(cfg), settings(cfg)
    directory = run_dir()
    device = resolve_device(cfg.trainer.device)
    rows = []
    model, tokenizer = load_model(str(directory / "final"))
    torch.manual_seed(cfg.seed)
    split_dir = directory / "eval" / f"{task.name}-{eval_settings.split}"
    rows.append(("student", cfg.student.name, evaluate(model, tokenizer, task, eval_settings, split_dir / "student",
                                                       str(directory / "final"), device)))
    if eval_settings.compare_teacher:
        teacher, teacher_tokenizer = prepare_model(C.model_spec(cfg.teacher), "teacher",
                                                   model_sources(C.source_settings(cfg), task))
        torch.manual_seed(cfg.seed)
        rows.append(("teacher", cfg.teacher.name, evaluate(teacher, teacher_tokenizer, task, eval_settings,
                                                           split_dir / "teacher", f"teacher:{cfg.teacher.name}", device)))
    print_table(rows, task.metric)
    return {role: metrics for role, _, metrics in rows}
