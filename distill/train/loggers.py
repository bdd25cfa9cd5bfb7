"""Metric sinks: ``metrics.jsonl`` always, Weights & Biases when asked.

W&B never prompts: ``mode`` defaults to offline in ``conf/logger/wandb.yaml``
and the local files are written whatever W&B does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distill.io import append_jsonl, atomic_write_text

log = logging.getLogger(__name__)


class MetricsLogger:
    def __init__(self, run_dir: Path, wandb_settings: dict | None, config: dict, resume_step: int):
        self.path = run_dir / "metrics.jsonl"
        self._truncate_after(resume_step)
        self._wandb = _start_wandb(run_dir, wandb_settings, config) if wandb_settings else None

    def _truncate_after(self, step: int) -> None:
        """A resumed run drops what the interrupted one logged past its checkpoint.

        A line that does not parse is what a kill or a full disk leaves mid-append:
        it is dropped with a warning instead of making every later run fail.
        """
        if not self.path.exists():
            return
        kept, torn = [], 0
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            record = _parse(line)
            if record is None:
                torn += line.strip() != ""
            elif record["step"] <= step:
                kept.append(line)
        if torn:
            log.warning("%s: dropped %d unreadable line(s) (a write was cut short)", self.path, torn)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, record: dict) -> None:
        append_jsonl(self.path, record)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), (int, float)) else None


def _start_wandb(run_dir: Path, settings: dict, config: dict):
    import os

    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(project=settings["project"], entity=settings["entity"], mode=settings["mode"],
                      name=settings["name"] or run_dir.name, dir=str(run_dir), config=config,
                      id=settings["id"], resume="allow")
