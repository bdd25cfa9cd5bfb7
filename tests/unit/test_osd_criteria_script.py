"""scripts/osd_criteria.py: PLAN.md's OSD criteria from a study's per-request series, on hand-made streams."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "osd_criteria.py"
FIRST_B = 4  # shift at 104, stream from 100: requests 0-3 are A, 4-9 B
NOISE = (0.0, 0.1, -0.1, 0.05, -0.05, 0.02)  # per-request noise shared by every arm: paired SEs see only offsets


def _stream(root: Path, name: str, accepted: float, overlap: float, alpha: float, jitter: float = 0.0) -> None:
    run = root / "stream" / name
    run.mkdir(parents=True)
    config = {"task": {"generator": {"shift": {"at": 104}}}, "method": {"stream_start": 100}}
    (run / "run_config.yaml").write_text(yaml.safe_dump(config))
    lines = [json.dumps({"step": 1, "loss": 1.0})]  # records without a request are skipped
    for request in range(10):
        noise = NOISE[request - FIRST_B] if request >= FIRST_B else 0.3  # A's requests must not count
        wobble = jitter * (1 if request % 2 else -1)
        lines.append(json.dumps({"request": request, "accepted_fraction": 0.5 + accepted + noise + wobble,
                                 "overlap_t1": 0.7 + overlap + noise + wobble, "acceptance_rate": 0.6 + alpha + noise}))
    text = "\n".join(lines) + "\n"
    if name.endswith("sampled"):  # as committed in docs/results: compressed
        (run / "metrics.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    else:
        (run / "metrics.jsonl").write_text(text)


def _criteria(root: Path) -> tuple[str, dict]:
    done = subprocess.run([sys.executable, str(SCRIPT), str(root), "--json", str(root / "c.json")],
                          capture_output=True, text=True, check=True)
    return done.stdout, json.loads((root / "c.json").read_text())


def test_paired_differences_on_b_only_and_each_verdict(tmp_path):
    _stream(tmp_path, "before", 0.0, 0.0, 0.0)
    _stream(tmp_path, "osd", 0.10, 0.0, 0.0)  # helps: +0.10 on every B request, SE 0
    _stream(tmp_path, "osd_mismatch", 0.02, -0.05, 0.0, jitter=0.01)  # +0.02 ± 0.0045: t 4.5; overlap −0.05: t −11
    _stream(tmp_path, "osd_anchored", 0.0, -0.01, 0.0, jitter=0.01)  # overlap −0.01 ± 0.0045: t −2.2, not below
    _stream(tmp_path, "before_sampled", 0.0, 0.0, 0.0)
    _stream(tmp_path, "osd_sampled", 0.0, 0.0, -0.03)  # α lower: does not help
    text, found = _criteria(tmp_path)
    osd = found["osd vs before (accepted_fraction)"]
    assert osd["difference"] == pytest.approx(0.10, abs=1e-9) and osd["n"] == 6 and osd["se"] < 1e-12
    mismatch = found["osd_mismatch vs before (accepted_fraction)"]
    # differences alternate 0.01 and 0.03 over 6 requests: mean 0.02, sd 0.01095, SE 0.00447
    assert mismatch["difference"] == pytest.approx(0.02, abs=1e-9) and mismatch["se"] == pytest.approx(0.0109545 / 6 ** 0.5, rel=1e-4)
    assert found["osd_sampled vs before_sampled (acceptance_rate)"]["difference"] == pytest.approx(-0.03, abs=1e-9)
    assert found["osd_mismatch_replay vs before (accepted_fraction)"] is None  # not run
    assert "| osd (accepted_fraction) | before |" in text and "helps |" in text
    assert "| osd_sampled (acceptance_rate) | before_sampled |" in text and "does not help" in text
    assert "| osd_mismatch | osd |" in text and "below all-positions by ≥ 3 SE" in text
    assert "| osd_anchored | osd |" in text and "not below by 3 SE" in text
    assert "Cost removed (PLAN.md: anchored or replay not below all-positions by ≥ 3 SE): yes, by osd_anchored" in text


def test_a_directory_that_is_not_a_study_is_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.strip().startswith("error: ")

