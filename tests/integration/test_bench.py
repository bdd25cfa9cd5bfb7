"""scripts/bench.py stays runnable: every section at toy sizes, in one run, prints its table and its ratios.

The figures at toy sizes mean nothing (docs/performance.md holds the measured ones); what fails here is a section
that no longer runs, or one whose ratio cells stopped being numbers."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTION_NAMES = next(ast.literal_eval(node.value) for node in ast.parse((REPO / "scripts" / "bench.py").read_text()).body
                     if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "SECTIONS")
NUMBER = r"\d+\.\d+"
# heading of each section, and a row that carries its ratios
SECTIONS = {
    "## 1. Divergence kernels": rf"\| jsd\(0\.5\) \|.*\| {NUMBER} \| {NUMBER} \|",  # ours/naive, ours/TRL time
    "## 2. Step breakdown per method, tiny presets": r"\| xkd \| \d+ \| \d+ \(\d+%\)",
    "## 3. GKD end to end vs TRL GKDTrainer": rf"\*\*ratio distill/TRL\*\* \| {NUMBER} \| {NUMBER} \| \*\*{NUMBER}×",
    "## 3b. On-policy GKD end to end vs TRL DistillationTrainer": rf"\*\*ratio distill/TRL\*\* .*\*\*{NUMBER}×",
    "## More than one process": rf"\| sft \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER}× \|",
    "## 4b. The fused loss under FSDP2": rf"\*\*fused / full\*\* \| \*\*{NUMBER}\*\* \| \*\*{NUMBER}\*\*",
    "## 5. The loss at real heads": rf"\| toy \| jsd\(0\.5\) \|( {NUMBER} \|){{3}}",
    "## 6. A whole GKD step": rf"\*\*fused vs TRL DistillationTrainer\*\* .*\*\*{NUMBER}\*\* of its memory",
    "## 9. On-policy decoding against its limit": rf"\| Qwen2 \(toy\) \| 2 \| \d+ \| \d+ \| \d+ \| {NUMBER} \| {NUMBER} \| \d+% \|",
    "## Teacher caches": rf"\| k = 8 \| \d+ \| {NUMBER} \|",
    "## Cross-tokenizer supervised KD": rf"\| teacher tokenizer of 400 tokens \| \d+ \| {NUMBER} \|",
    "student on GPT-2's tokenizer (50 257)": rf"\| teacher on GPT-2's tokenizer \(50 257\) \| \d+ \| {NUMBER} \|",
}


# Two halves of about equal cost, run at once: most of a toy section is Python start-up (imports), which one core
# does alone. "processes" launches its own runs (2 processes each), the rest run their variants in one process.
HALVES = (["processes", "decode", "cross"], ["divergences", "steps", "trl", "heads", "gkdstep", "tcache"])


def test_every_section_runs_at_toy_sizes_and_prints_its_ratios(tmp_path):
    env = {**os.environ, "DISTILL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    outs = [tmp_path / f"bench-{i}.json" for i in range(len(HALVES))]
    procs = [subprocess.Popen([sys.executable, "scripts/bench.py", "--toy", "--json", str(out), "--sections", *half],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for out, half in zip(outs, HALVES)]
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    for proc, err in zip(procs, errors):
        assert proc.returncode == 0, err[-3000:]
    assert sorted(section for half in HALVES for section in half) == sorted(SECTION_NAMES)  # every section, once
    text = "\n".join(line for out in outs for line in json.loads(out.read_text()))
    missing = [heading for heading in SECTIONS if heading not in text]
    assert missing == [], f"sections that printed nothing: {missing}"
    unmeasured = [heading for heading, row in SECTIONS.items() if not re.search(row, text)]
    assert unmeasured == [], f"sections without their ratios: {unmeasured}\n{text}"
