"""Fake `distill train` / `distill eval` outputs, written by hand in the real layout.

Scores follow simple formulas so tests can check aggregates by hand: student
accuracy = BASE[method] + 10·β + 3·seed + 10·λ (gkd only) + 10·train_fraction;
a sampled decoding at temperature T scores accuracy − 10·T with self_bleu = 80 − 30·T.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

BASE = {"gkd": 50.0, "supervised_kd": 40.0, "sft": 30.0}
TEACHER_SCORE = 80.0
COMMITS = ("0123456789" * 4, "fedcba9876" * 4)  # even seeds ran at the first, odd ones at the second (with local changes)
TARGETS = {"gkd": "distill.methods.gkd.GKD", "supervised_kd": "distill.methods.supervised_kd.SupervisedKD",
           "sft": "distill.methods.sft.SFT"}
TEMPERATURES = (0.5, 1.0)


def run_config(method: str, seed: int, beta: float, lmbda: float, fraction: float) -> dict:
    divergence = {"name": "jsd", "beta": beta, "normalize": False, "kd_temperature": 1.0, "chunk_size": 128}
    node: dict = {"_target_": TARGETS[method]}
    if method == "gkd":
        node.update({"divergence": divergence, "lmbda": lmbda, "seq_kd": False, "sampling_temperature": 1.0,
                     "alpha": 1.0, "reward_metric": "accuracy",
                     "teacher_decoding": {"strategy": "greedy", "num_beams": 1}})
    elif method == "supervised_kd":
        node.update({"divergence": divergence, "ce_weight": 0.0})
    return {"seed": seed, "method": node, "divergence": divergence,
            "task": {"name": "arith", "metric": "accuracy", "train_fraction": fraction, "max_train_examples": None},
            "student": {"name": "tiny"}, "teacher": {"name": "tiny"},
            "trainer": {"device": "cpu", "lr": 0.002, "max_steps": 100, "adam_betas": [0.9, 0.999],
                        "progress": False, "log_every": 25}}


def training_records(method: str, seed: int, last_step: int) -> list[dict]:
    records = []
    for step in range(25, last_step + 1, 25):
        record = {"step": step, "loss": 3.0 - step / 100 + seed * 0.1, "lr": 0.002, "tokens_per_s": 1000.0,
                  "grad_norm": 1.0, "loss/kd": 2.0 - step / 100}
        if method == "supervised_kd":
            record["loss/ce"] = 1.0
        if method == "gkd":
            record["frac_on_policy"] = 0.5
        records.append(record)
        if step % 50 == 0:
            records.append({"step": step, "val/loss": 2.5 - step / 200})
    return records


def eval_metrics(accuracy: float, checkpoint: str) -> dict:
    greedy = {"name": "greedy", "strategy": "greedy", "max_new_tokens": 96, "num_beams": 1,
              "sampling_temperature": None, "num_samples": 1, "accuracy": accuracy}
    sampled = [{"name": f"sample_t{t}_k4", "strategy": "sample", "max_new_tokens": 96, "num_beams": 1,
                "sampling_temperature": t, "num_samples": 4, "accuracy": accuracy - 10 * t,
                "self_bleu": 80 - 30 * t} for t in TEMPERATURES]
    return {"task": "arith", "split": "test", "checkpoint": checkpoint, "metric": "accuracy", "num_examples": 500,
            "decoding": greedy, "accuracy": accuracy, "self_bleu": sampled[0]["self_bleu"],
            "by_decoding": [greedy, *sampled]}


def write_run(run: Path, method: str, seed: int, beta: float = 0.5, lmbda: float = 0.5, fraction: float = 1.0,
              finished: bool = True, variants: tuple[str, ...] = ("student",), teacher: bool = False) -> float:
    """One run directory; returns the student's accuracy."""
    run.mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / "run_config.yaml").write_text(yaml.safe_dump(run_config(method, seed, beta, lmbda, fraction),
                                                        sort_keys=False))
    records = training_records(method, seed, 100 if finished else 50)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    accuracy = BASE[method] + 10 * beta + 3 * seed + 10 * lmbda * (method == "gkd") + 10 * fraction
    if not finished:
        return accuracy
    (run / "final").mkdir()
    (run / "final" / "config.json").write_text("{}")
    summary = {"steps": 100, "resumed_from_step": 0, "train_seconds": 10.0 + seed, "method": method,
               "task": "arith", "student": "tiny", "teacher": "tiny", "wall_seconds": 12.0,
               "final": str(run / "final"), "code": {"commit": COMMITS[seed % 2], "dirty": seed % 2 == 1}}
    (run / "summary.json").write_text(json.dumps(summary))
    for variant in variants:
        out = run / "eval" / "arith-test" / variant
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps(eval_metrics(accuracy, str(run / "final"))))
    if teacher:
        out = run / "eval" / "arith-test" / "teacher"
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps(eval_metrics(TEACHER_SCORE, "teacher:tiny")))
    return accuracy


@pytest.fixture(scope="package")
def sweep(tmp_path_factory) -> Path:
    """2 methods × 2 β × 2 seeds, one extra `default` eval, teacher scored by three runs, one partial run."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    (root / ".hydra").mkdir()
    (root / ".hydra" / "run_config.yaml").write_text("not: a run\n")  # hidden dirs are never runs
    for method in ("gkd", "supervised_kd"):
        for beta in (0.1, 0.9):
            for seed in (0, 1):
                variants = ("student", "default") if (method, beta, seed) == ("gkd", 0.9, 1) else ("student",)
                teacher = method == "gkd" and (beta, seed) in ((0.1, 0), (0.1, 1), (0.9, 0))
                write_run(root / f"{method}-arith-tiny" / f"divergence.beta={beta},seed={seed}", method, seed,
                          beta=beta, variants=variants, teacher=teacher)
    write_run(root / "gkd-arith-tiny" / "divergence.beta=0.1,seed=2", "gkd", 2, beta=0.1, finished=False)
    return root


@pytest.fixture(scope="package")
def grid(tmp_path_factory) -> Path:
    """gkd over β × λ × 2 seeds: two numeric swept settings for the heatmap."""
    root = tmp_path_factory.mktemp("grid")
    for beta in (0.1, 0.9):
        for lmbda in (0.0, 1.0):
            for seed in (0, 1):
                write_run(root / f"b{beta}-l{lmbda}-s{seed}", "gkd", seed, beta=beta, lmbda=lmbda)
    return root


@pytest.fixture(scope="package")
def fractions(tmp_path_factory) -> Path:
    """sft and gkd over three training fractions × 2 seeds."""
    root = tmp_path_factory.mktemp("fractions")
    for method in ("sft", "gkd"):
        for fraction in (0.25, 0.5, 1.0):
            for seed in (0, 1):
                write_run(root / f"{method}-f{fraction}-s{seed}", method, seed, fraction=fraction)
    return root
