"""Markdown table of a scripts/compare_methods.sh output directory: accuracy, step time, wall time."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: Path) -> None:
    print("| run | greedy accuracy (%) | steps | train s | s/step |")
    print("|---|---|---|---|---|")
    for name in ("teacher", "sft_student_start", "sft", "supervised_kd", "seqkd", "gkd", "minillm", "xkd"):
        run = root / name
        metrics = run / "metrics.json" if (run / "metrics.json").exists() else next(iter(sorted(run.glob("eval/**/metrics.json"))), None)
        if metrics is None:
            print(f"| {name} | missing | | | |")
            continue
        accuracy = json.loads(metrics.read_text())["accuracy"]
        summary = run / "summary.json"
        if summary.exists():
            s = json.loads(summary.read_text())
            print(f"| {name} | {accuracy:.1f} | {s['steps']} | {s['train_seconds']:.0f} | {s['train_seconds'] / s['steps']:.3f} |")
        else:
            print(f"| {name} | {accuracy:.1f} | – | – | – |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
