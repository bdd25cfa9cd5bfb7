"""scripts/stream_series.py: the OSD per-request series, one CSV row per request and arm, from metrics.jsonl."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stream_series.py"


def test_every_request_of_every_arm_and_nothing_else(tmp_path):
    stream = tmp_path / "stream"
    for arm, alphas in (("before", (0.5, 0.25)), ("osd", (0.75, 1 / 3))):
        (stream / arm).mkdir(parents=True)
        lines = [json.dumps({"request": i, "acceptance_rate": a, "accepted_fraction": a / 2, "overlap_t1": None,
                             "tokens": 5, "target_forwards": 2}) for i, a in enumerate(alphas)]
        lines.insert(1, json.dumps({"step": 1, "loss": 0.3}))  # an optimizer step's record: not a request
        (stream / arm / "metrics.jsonl").write_text("\n".join(lines) + "\n{\"request\": 2, \"acc")  # torn last line
    (stream / "report").mkdir()  # a directory without metrics.jsonl is not an arm
    out = tmp_path / "series.csv"
    done = subprocess.run([sys.executable, str(SCRIPT), str(stream), "--out", str(out)], capture_output=True,
                          text=True, check=True)
    assert "wrote 4 requests" in done.stdout
    rows = list(csv.DictReader(out.open()))
    assert [(r["arm"], r["request"], r["acceptance_rate"], r["accepted_fraction"], r["overlap_t1"]) for r in rows] == [
        ("before", "0", "0.5", "0.25", ""), ("before", "1", "0.25", "0.125", ""),
        ("osd", "0", "0.75", "0.375", ""), ("osd", "1", "0.33333", "0.16667", "")]
