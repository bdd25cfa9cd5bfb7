"""Collecting: find run directories and read their files into plain records.

A run directory is one holding ``run_config.yaml`` (written before training
starts, so interrupted runs are found too). Nothing here aggregates: a broken
or missing file becomes a warning on the record, so the report can list the
run instead of dropping it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from distill.errors import DataError
from distill.report.aggregate import MAIN_KEY, METRIC_KEYS

RUN_MARKER = "run_config.yaml"
# Subdirectories of a run that never hold other runs.
RUN_PARTS = ("final", "checkpoints", "eval", "wandb")


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories under ``root`` (``root`` itself included), sorted."""
    found = []
    for current, dirs, files in os.walk(root):
        if RUN_MARKER in files:
            found.append(Path(current))
            dirs[:] = []  # a run's own checkpoints/, eval/, final/ hold no nested runs
            continue
        # .hydra/ and .tmp-* (half-written atomic dirs) are never runs.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in RUN_PARTS)
    return sorted(found)


def collect(roots: list[Path]) -> list[dict]:
    """Run records of every run under each root; a root that is missing or holds no run is an error."""
    runs = []
    prefixes = _root_prefixes(roots) if len(roots) > 1 else [""] * len(roots)
    for root, prefix in zip(roots, prefixes):
        if not root.exists():
            raise DataError(f"{root} does not exist; pass a directory written by `distill train`")
        if not root.is_dir():
            raise DataError(f"{root} is not a directory; pass a run or sweep directory")
        found = find_run_dirs(root)
        if not found:
            raise DataError(f"{root} holds no training runs (no {RUN_MARKER} found under it)")
        runs.extend(read_run(path, _label(root, path, prefix)) for path in found)
    return runs


def _root_prefixes(roots: list[Path]) -> list[str]:
    """Names that tell the roots apart: their last path part, or as many more parents as it takes
    (``a/stream`` and ``b/stream`` must not give their runs the same labels)."""
    parts = [root.resolve().parts for root in roots]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [root.as_posix() for root in roots]


def _root_name(root: Path) -> str:
    return root.name or root.resolve().name


def _label(root: Path, path: Path, prefix: str) -> str:
    """The run's path relative to the directory given; several roots are told apart by their names."""
    rel = path.relative_to(root).as_posix()
    if rel == ".":
        return _root_name(root)
    return f"{prefix}/{rel}" if prefix else rel


def read_run(run_dir: Path, label: str) -> dict:
    """One run's record. A run_config.yaml that does not hold a run's settings makes the run ``unreadable``
    (listed as missing, never scored: its scores could not be grouped); other bad files are ignored."""
    warnings: list[str] = []
    config, problem = _read_yaml(run_dir / RUN_MARKER)
    problem = problem or _config_problem(config)
    if problem is not None:
        warnings.append(f"{run_dir / RUN_MARKER}: {problem}; the run is listed as unreadable, without scores")
        problem = f"{RUN_MARKER} {problem}"
    return {
        "run": label,
        "path": str(run_dir),
        "config": config if problem is None else {},
        "unreadable": problem,
        "summary": _summary(run_dir / "summary.json", warnings),
        "has_final": (run_dir / "final").is_dir(),
        "metrics": read_metrics(run_dir / "metrics.jsonl", warnings) if problem is None else [],
        "evals": read_evals(run_dir / "eval", warnings) if problem is None else [],
        "warnings": warnings,
    }


def _kind(value) -> str:
    """How a JSON/YAML value reads in a warning: ``null``, ``a list``, ``5``."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return json.dumps(value, default=str)[:40]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _config_problem(config) -> str | None:
    """Why a run_config.yaml holds no usable settings, or None; only what the report reads is checked."""
    if not isinstance(config, dict):
        return f"holds {_kind(config)}, not a mapping of settings"
    for node in ("method", "task", "student", "teacher"):
        if config.get(node) is not None and not isinstance(config[node], dict):
            return f"has '{node}' {_kind(config[node])}, not a mapping"
    seed = config.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        return f"has 'seed' {_kind(seed)}, not an integer"
    return None


# summary.json fields the report reads, with the type each must have (others are ignored).
SUMMARY_FIELDS = {"method": str, "task": str, "student": str, "teacher": str, "train_seconds": (int, float),
                  "code": dict}


def _summary(path: Path, warnings: list[str]) -> dict | None:
    """summary.json's fields the report uses; one of the wrong type is dropped with a warning."""
    summary = _read_json(path, warnings)
    if summary is None:
        return None
    typed = {}
    for key, value in summary.items():
        expected = SUMMARY_FIELDS.get(key)
        if expected and value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            wanted = {str: "string", dict: "mapping"}.get(expected, "number")
            warnings.append(f"{path}: '{key}' is {_kind(value)}, not a {wanted}; ignored")
            continue
        typed[key] = value
    return typed


def read_metrics(path: Path, warnings: list[str]) -> list[dict]:
    """metrics.jsonl records; bad lines are skipped with a warning.

    Not ``distill.io.read_jsonl``: that raises on the first bad line, and a run
    killed mid-append may end in a partial line that must not hide the run.
    """
    if not path.is_file():
        return []
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
        else:
            bad += 1
    if bad:
        warnings.append(f"{path}: skipped {bad} malformed line(s)")
    return records


def read_evals(eval_root: Path, warnings: list[str]) -> list[dict]:
    """One entry per ``eval/<task>-<split>/<variant>/metrics.json``, sorted by directory."""
    if not eval_root.is_dir():
        return []
    evals = []
    for split_dir in sorted(p for p in eval_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for variant_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            path = variant_dir / "metrics.json"
            if not path.is_file():
                warnings.append(f"{variant_dir} has no metrics.json (evaluation unfinished?)")
                continue
            metrics = _read_json(path, warnings, "this evaluation is ignored")
            problem = None if metrics is None else _eval_problem(metrics)
            if problem is not None:
                warnings.append(f"{path}: {problem}; this evaluation is ignored")
            elif metrics is not None:
                evals.append({"eval": split_dir.name, "variant": variant_dir.name, "metrics": metrics})
    return evals


def _eval_problem(metrics: dict) -> str | None:
    """Why an evaluation's metrics.json cannot be scored, or None (the fields the report reads)."""
    if not isinstance(metrics.get("metric"), str) or not metrics["metric"]:
        return f"'metric' is {_kind(metrics.get('metric'))}, not a metric name"
    for key, kind in (("decoding", dict), ("by_decoding", list), ("split", str)):
        if metrics.get(key) is not None and not isinstance(metrics[key], kind):
            return f"'{key}' is {_kind(metrics[key])}, not {'a string' if kind is str else _kind(kind())}"
    if not all(isinstance(entry, dict) for entry in metrics.get("by_decoding") or []):
        return "'by_decoding' holds something other than objects"
    for where in (metrics, metrics.get("decoding") or {}):
        for key, value in where.items():
            if key in (*_score_keys(metrics["metric"]), "self_bleu") and value is not None and not _is_number(value):
                return f"score '{key}' is {_kind(value)}, not a number"
    return None


def _score_keys(metric: str) -> tuple[str, ...]:
    return (*METRIC_KEYS.get(metric, ()), MAIN_KEY.get(metric, metric))


def _read_json(path: Path, warnings: list[str], skipped: str = "ignored") -> dict | None:
    """A JSON object, or None (absent, unreadable or not an object: the last two with a warning)."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        warnings.append(f"{path}: unreadable JSON ({exc}); {skipped}")
        return None
    if not isinstance(value, dict):
        warnings.append(f"{path}: holds {_kind(value)}, not a JSON object; {skipped}")
        return None
    return value


def _read_yaml(path: Path) -> tuple[object, str | None]:
    """(the YAML value, None) or (None, why it cannot be read)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")), None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, f"is unreadable YAML ({str(exc).splitlines()[0]})"
