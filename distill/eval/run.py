"""`distill eval`: generate on a task split, write generations.jsonl and metrics.json.

Contract: docs/design.md, Evaluation.

Scoring reads only the generations file, so ``distill rescore FILE``
recomputes metrics without a model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from distill.data.collate import encode
from distill.data.tasks import TaskSpec, format_examples, load_split
from distill.errors import ConfigError, DataError
from distill.eval.generate import generate_texts
from distill.eval.settings import EvalSettings, decodings
from distill.eval.speculative import speculative_records, summarise_speculative
from distill.io import atomic_write_json, atomic_write_jsonl, read_jsonl
from distill.metrics import METRIC_KEYS, is_correct, item_scores, pass_at_k, score
from distill.metrics.diversity import distinct_n, self_bleu
from distill.models.generation import Decoding
from distill.models.load import fit_lengths
from distill.provenance import code_version

log = logging.getLogger(__name__)


def score_decoding(metric: str, outputs: list[list[str]], references: list) -> dict[str, float]:
    """Task metric averaged over the k sample columns; with k > 1 also the diversity of each prompt's samples
    (self_bleu, distinct_1, distinct_2) and, for accuracy, pass_at_k (any of the k samples correct)."""
    k = len(outputs[0])
    columns = [score(metric, [o[j] for o in outputs], references) for j in range(k)]
    result = {key: sum(c[key] for c in columns) / k for key in columns[0]}
    if k > 1:
        result["self_bleu"] = self_bleu(outputs)
        result["distinct_1"], result["distinct_2"] = distinct_n(outputs, 1), distinct_n(outputs, 2)
        if metric == "accuracy":
            correct = [[any(is_correct(o, r) for r in ([ref] if isinstance(ref, str) else ref)) for o in group]
                       for group, ref in zip(outputs, references)]
            result["pass_at_k"] = pass_at_k(correct, k)
    return result


def summarise(records: list[dict]) -> dict:
    """metrics.json content from generation records (all that rescoring needs)."""
    first = records[0]
    references = [r.get("references") or r["reference"] for r in records]  # every correct output, where listed
    entries = []
    for name, decoding in first["decoding"].items():
        outputs = [r["outputs"][name] for r in records]
        entries.append({"name": name, **decoding, **score_decoding(first["metric"], outputs, references)})
    primary = entries[0]
    metrics = {"task": first["task"], "split": first["split"], "checkpoint": first["checkpoint"],
               "metric": first["metric"], "num_examples": len(records), "decoding": primary}
    # The top level repeats the primary decoding's scores only: a number never sits beside one that
    # another decoding produced (a greedy accuracy next to a sampled Self-BLEU). Each decoding's
    # scores, with its settings, are in ``by_decoding``.
    metrics.update({k: v for k, v in primary.items() if k not in ("name",) and k not in Decoding.__dataclass_fields__})
    for entry in entries:
        if entry.get("strategy") == "speculative":
            entry.update(summarise_speculative([r["speculative"] for r in records], entry["num_proposals"],
                                               entry.get("sampling_temperature")))
    metrics["by_decoding"] = entries
    return metrics


def evaluate(model, tokenizer, task: TaskSpec, settings: EvalSettings, out_dir: Path, checkpoint: str,
             device: torch.device, draft=None, draft_path: str | None = None, records: list | None = None) -> dict:
    """Generate with every decoding of ``decodings``, and speculatively with ``draft`` when given; write and score.
    ``records``: the split, when the caller loaded it already (to refuse bad data before writing anything)."""
    records = load_split(task, settings.split) if records is None else records
    encoder_decoder = bool(model.config.is_encoder_decoder)
    examples = format_examples(task, records, encoder_decoder)
    plan = decodings(task, settings)
    if draft is not None:
        check_speculative_decoding(plan[0])
    max_source, _ = fit_lengths(model, task.max_source_length, max(d.max_new_tokens for d in plan))
    items = encode(tokenizer, examples, max_source, task.max_target_length)
    model.to(device)
    generations = [{"index": i, "task": task.name, "split": settings.split, "metric": task.metric,
                    "checkpoint": checkpoint, "prompt": ex.source, "reference": ex.target.strip(),
                    **({"references": ex.record[task.references_field]} if task.references_field else {}),
                    "outputs": {}, "decoding": {}} for i, ex in enumerate(examples)]
    for decoding in plan:
        texts = generate_texts(model, tokenizer, items, decoding, settings.batch_size, device, settings.progress)
        for record, outputs in zip(generations, texts):
            record["outputs"][decoding.name] = outputs
            record["decoding"][decoding.name] = asdict(decoding)
    if draft is not None:
        _speculative(model, draft.to(device), tokenizer, items, plan[0], settings, draft_path, generations)
    _add_item_scores(generations, task.metric)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out_dir / "generations.jsonl", generations)
    metrics = {**summarise(generations), "code": code_version()}  # the code that generated and scored
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def _add_item_scores(generations: list[dict], metric: str) -> None:
    """Each record's ``scores``: per decoding, one score dict per sample (lm-eval's --log_samples convention)."""
    references = [r.get("references") or r["reference"] for r in generations]
    for name in generations[0]["outputs"]:
        k = len(generations[0]["outputs"][name])
        columns = [item_scores(metric, [r["outputs"][name][j] for r in generations], references) for j in range(k)]
        for i, record in enumerate(generations):
            record.setdefault("scores", {})[name] = [column[i] for column in columns]


def check_speculative_decoding(primary: Decoding) -> None:
    """Speculative decoding verifies the primary decoding token by token: greedy or sampled, never beam."""
    if primary.strategy == "beam":
        raise ConfigError("speculative decoding verifies greedy or sampled decoding, not beam search; "
                          "set eval.strategy=greedy (or sample)")


def _speculative(target, draft, tokenizer, items, primary: Decoding, settings: EvalSettings, draft_path: str | None,
                 generations: list[dict]) -> None:
    """The primary decoding again, speculatively: outputs under ``speculative_k<k>``, per-request stats beside."""
    k = settings.speculative["num_proposals"]
    name = f"speculative_k{k}"
    results = speculative_records(target, draft, tokenizer, items, primary.max_new_tokens, k,
                                  primary.sampling_temperature, settings.progress, seed=0)
    info = {"strategy": "speculative", "target_decoding": primary.name, "max_new_tokens": primary.max_new_tokens,
            "sampling_temperature": primary.sampling_temperature, "num_samples": 1, "num_proposals": k,
            "draft": draft_path}
    for record, (text, stats) in zip(generations, results):
        record["outputs"][name] = [text]
        record["decoding"][name] = info
        record["speculative"] = stats


GENERATION_FIELDS = ("task", "split", "metric", "checkpoint", "reference", "outputs", "decoding")


def rescore(generations_path: Path) -> dict:
    """Recompute metrics.json beside a generations file; no model involved."""
    if generations_path.is_dir():
        inside = generations_path / "generations.jsonl"
        found = inside if inside.is_file() else next(iter(sorted(generations_path.rglob("generations.jsonl"))), None)
        hint = f"pass {found}" if found else "pass a generations.jsonl written by `distill eval` (there is none in it)"
        raise DataError(f"{generations_path} is a directory, not a generations file; {hint}")
    if not generations_path.is_file():
        raise DataError(f"{generations_path} does not exist; pass a generations.jsonl written by `distill eval`")
    records = read_jsonl(generations_path, required_fields=GENERATION_FIELDS)
    if not records:
        raise DataError(f"{generations_path} holds no generations")
    for number, record in enumerate(records, start=1):
        _check_generation(generations_path, number, record, records[0])
    metrics = {**summarise(records), "code": code_version()}  # the code that scored (generations may be older)
    atomic_write_json(generations_path.parent / "metrics.json", metrics)
    return metrics


def _check_generation(path: Path, number: int, record: dict, first: dict) -> None:
    """One record of a generations file, as ``summarise`` needs it; errors name the record."""
    where = f"{path}: record {number}"
    if record["metric"] not in METRIC_KEYS:
        raise DataError(f"{where}: unknown metric {record['metric']!r}; expected one of {sorted(METRIC_KEYS)}")
    if not isinstance(record["reference"], str):
        raise DataError(f"{where}: 'reference' must be a string")
    if not isinstance(record["decoding"], dict) or not isinstance(record["outputs"], dict):
        raise DataError(f"{where}: 'decoding' and 'outputs' must be objects keyed by decoding name")
    if number == 1:  # the first record's decodings are the ones scored
        if not record["decoding"]:
            raise DataError(f"{where}: 'decoding' names no decoding (outputs {sorted(record['outputs'])}); "
                            "re-run the evaluation that wrote this file")
        for name, info in record["decoding"].items():
            if not isinstance(info, dict):
                raise DataError(f"{where}: decoding[{name!r}] must be an object of its settings, got {info!r:.60}")
            if info.get("strategy") == "speculative" and not isinstance(info.get("num_proposals"), int):
                raise DataError(f"{where}: speculative decoding[{name!r}] has no integer 'num_proposals'")
    speculative = [name for name, info in first["decoding"].items() if info.get("strategy") == "speculative"]
    if speculative and not isinstance(record.get("speculative"), dict):  # its per-request counts and timings
        raise DataError(f"{where}: decoding {speculative[0]!r} is speculative but the record has no 'speculative' "
                        "stats object; re-run the evaluation that wrote this file")
    for name in first["decoding"]:
        outputs = record["outputs"].get(name)
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
            raise DataError(f"{where}: outputs[{name!r}] must be a non-empty list of strings, got {outputs!r:.60}")
        if len(outputs) != len(first["outputs"][name]):
            raise DataError(f"{where}: outputs[{name!r}] has {len(outputs)} samples, record 1 has "
                            f"{len(first['outputs'][name])}")
