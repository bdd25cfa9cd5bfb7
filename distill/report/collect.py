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
    warnings: list[str] = []
    config = _read_yaml(run_dir / RUN_MARKER, warnings)
    return {
        "run": label,
        "path": str(run_dir),
        "config": config if isinstance(config, dict) else {},
        "summary": _read_json(run_dir / "summary.json", warnings),
        "has_final": (run_dir / "final").is_dir(),
        "metrics": read_metrics(run_dir / "metrics.jsonl", warnings),
        "evals": read_evals(run_dir / "eval", warnings),
        "warnings": warnings,
    }


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
            metrics = _read_json(path, warnings)
            if isinstance(metrics, dict):
                evals.append({"eval": split_dir.name, "variant": variant_dir.name, "metrics": metrics})
    return evals


def _read_json(path: Path, warnings: list[str]):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        warnings.append(f"{path}: unreadable JSON ({exc}); ignored")
        return None


def _read_yaml(path: Path, warnings: list[str]):
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        warnings.append(f"{path}: unreadable YAML ({str(exc).splitlines()[0]}); ignored")
        return None
