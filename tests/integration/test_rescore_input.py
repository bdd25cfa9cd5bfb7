"""`distill rescore` on input it cannot score: one line naming the file or record, nothing written."""

from __future__ import annotations

import json

import pytest

from .conftest import cli

RECORD = {"task": "arith", "split": "test", "metric": "accuracy", "checkpoint": "x", "reference": "#### 2",
          "outputs": {"greedy": ["#### 2"]}, "decoding": {"greedy": {"strategy": "greedy"}}}
SPECULATIVE = {"strategy": "speculative", "target_decoding": "greedy", "max_new_tokens": 8, "num_samples": 1,
               "sampling_temperature": None, "num_proposals": 3, "draft": "d"}
STATS = {"tokens": 4, "proposed": 6, "accepted": 3}  # record 1's: only record 2 is refused


def _error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _speculative(**stats):
    return {"outputs": {"greedy": ["#### 2"], "speculative_k3": ["#### 2"]},
            "decoding": {"greedy": {"strategy": "greedy"}, "speculative_k3": SPECULATIVE}, **stats}


@pytest.mark.parametrize("first, second, named", [
    ({"outputs": {}, "decoding": {}}, {}, "record 1: 'decoding' names no decoding"),
    ({}, {"outputs": {}}, "record 2: outputs['greedy'] must be a non-empty list"),
    (_speculative(speculative=STATS), _speculative(), "record 2: decoding 'speculative_k3' is speculative but the "
                                                      "record has no 'speculative' stats"),
    (_speculative(speculative=STATS), _speculative(speculative=[1]), "record 2: decoding 'speculative_k3' is "
                                                                     "speculative but the record has no 'speculative'"),
])
def test_a_record_rescore_cannot_use_is_named_in_one_line(tmp_path, capsys, first, second, named):
    """Issue: outputs {} (with no decoding) raised IndexError, a speculative record without its stats KeyError."""
    path = tmp_path / "generations.jsonl"
    path.write_text("".join(json.dumps({**RECORD, **changes}) + "\n" for changes in (first, second)))
    assert cli("rescore", str(path)) == 2
    assert f"{path}: {named}" in _error_line(capsys)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("inside", ["", "generations.jsonl", "eval/arith-test/student/generations.jsonl"])
def test_rescore_of_a_directory_says_so_and_names_its_generations(tmp_path, capsys, inside):
    """Issue: a directory was reported as not existing."""
    if inside:
        (tmp_path / inside).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / inside).write_text(json.dumps(RECORD) + "\n")
    assert cli("rescore", str(tmp_path)) == 2
    line = _error_line(capsys)
    assert f"{tmp_path} is a directory" in line and "does not exist" not in line
    assert (f"pass {tmp_path / inside}" in line) if inside else "there is none in it" in line
    assert not (tmp_path / "metrics.json").exists()
