"""distill.data.arith: seeded GSM8K-style arithmetic word problems."""

from __future__ import annotations

import json
import operator
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest

from distill.data.arith import ITEMS, NAMES, ArithSpec, generate_splits
from distill.errors import ConfigError

DEFAULT = ArithSpec(seed=1234, min_steps=2, max_steps=3, max_number=20, max_factor=3, operations=("add", "sub", "mul"))

KNOBS = {
    "default": DEFAULT,
    "long_all_ops": ArithSpec(seed=5, min_steps=1, max_steps=6, max_number=50, max_factor=5, operations=("add", "sub", "mul")),
    "add_only": ArithSpec(seed=11, min_steps=3, max_steps=3, max_number=9, max_factor=2, operations=("add",)),
    "sub_mul": ArithSpec(seed=3, min_steps=2, max_steps=5, max_number=4, max_factor=4, operations=("sub", "mul")),
    "mul_only": ArithSpec(seed=8, min_steps=1, max_steps=4, max_number=10, max_factor=2, operations=("mul",)),
}

SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}

START = re.compile(r"(?P<name>[A-Z][a-z]+) has (?P<value>\d+) (?P<item>[a-z]+)\.")
STEP = re.compile(
    r"(?P<next>Next, )?(?P<name>[A-Z][a-z]+) "
    r"(?:gets (?P<add>\d+) more (?P<item_add>[a-z]+)"
    r"|gives away (?P<sub>\d+) (?P<item_sub>[a-z]+)"
    r"|ends up with (?P<mul>\d+) times as many (?P<item_mul>[a-z]+))\."
)
QUESTION = re.compile(r"How many (?P<item>[a-z]+) does (?P<name>[A-Z][a-z]+) have now\?")
WORKING = re.compile(r"(?P<a>\d+) (?P<op>[-+*]) (?P<k>\d+) = (?P<r>\d+)")
FINAL = re.compile(r"#### (?P<n>-?\d+)")


def check_problem(record: dict, spec: ArithSpec) -> int:
    """Re-derive the answer from the question text alone and check every line of working.

    Returns the number of operation steps.
    """
    assert set(record) == {"question", "answer"}
    sentences = re.split(r"(?<=[.?]) ", record["question"])
    assert len(sentences) >= 3, record
    start = START.fullmatch(sentences[0])
    assert start, sentences[0]
    name, item, value = start["name"], start["item"], int(start["value"])
    assert name in NAMES and item in ITEMS
    assert 1 <= value <= spec.max_number

    expected_lines = []
    for i, sentence in enumerate(sentences[1:-1]):
        step = STEP.fullmatch(sentence)
        assert step, sentence
        assert step["name"] == name
        assert bool(step["next"]) == (i > 0), "only steps after the first start with 'Next, '"
        op = next(o for o in ("add", "sub", "mul") if step[o] is not None)
        assert op in spec.operations
        assert step[f"item_{op}"] == item
        k = int(step[op])
        if op == "add":
            assert 1 <= k <= spec.max_number
            new = value + k
        elif op == "sub":
            assert 1 <= k <= value, "cannot give away more than one has"
            new = value - k
        else:
            assert 2 <= k <= spec.max_factor
            new = value * k
        assert new >= 0
        expected_lines.append((value, SYMBOL[op], k, new))
        value = new

    question = QUESTION.fullmatch(sentences[-1])
    assert question, sentences[-1]
    assert (question["name"], question["item"]) == (name, item)

    lines = record["answer"].split("\n")
    assert len(lines) == len(expected_lines) + 1
    previous = int(start["value"])
    for line, expected in zip(lines[:-1], expected_lines):
        working = WORKING.fullmatch(line)
        assert working, line
        a, op, k, r = int(working["a"]), working["op"], int(working["k"]), int(working["r"])
        assert a == previous, f"working does not chain: {line!r} after {previous}"
        assert APPLY[op](a, k) == r, f"wrong arithmetic: {line!r}"
        assert (a, op, k, r) == expected, f"working {line!r} does not match the question"
        previous = r
    final = FINAL.fullmatch(lines[-1])
    assert final, lines[-1]
    assert int(final["n"]) == value == previous
    return len(expected_lines)


@pytest.mark.parametrize("knobs", sorted(KNOBS))
def test_problems_are_correct_and_within_bounds(knobs):
    spec = KNOBS[knobs]
    splits = generate_splits(spec, {"train": 200, "validation": 50, "test": 100})
    steps = set()
    for records in splits.values():
        for record in records:
            steps.add(check_problem(record, spec))
    assert steps <= set(range(spec.min_steps, spec.max_steps + 1))
    if spec.max_steps > spec.min_steps:
        # 350 draws from a uniform step count: both ends of the range show up.
        assert {spec.min_steps, spec.max_steps} <= steps


@pytest.mark.parametrize("knobs", sorted(KNOBS))
def test_every_enabled_operation_is_used(knobs):
    spec = KNOBS[knobs]
    records = generate_splits(spec, {"train": 200})["train"]
    used = {op for op, sym in SYMBOL.items() for r in records if f" {sym} " in r["answer"]}
    assert used == set(spec.operations)


def test_splits_have_requested_sizes_and_are_disjoint():
    sizes = {"train": 300, "validation": 40, "test": 80}
    splits = generate_splits(DEFAULT, sizes)
    assert {s: len(r) for s, r in splits.items()} == sizes
    questions = {s: [r["question"] for r in recs] for s, recs in splits.items()}
    for split, qs in questions.items():
        assert len(set(qs)) == len(qs), f"duplicate questions inside {split}"
    assert not set(questions["train"]) & set(questions["test"])
    assert not set(questions["train"]) & set(questions["validation"])
    assert not set(questions["validation"]) & set(questions["test"])


def test_disjoint_even_when_the_problem_space_is_small():
    # 20 names x 12 items x 3 start values x 3 amounts = 2160 distinct one-step problems;
    # random draws would collide often, so disjointness must be enforced.
    spec = ArithSpec(seed=0, min_steps=1, max_steps=1, max_number=3, max_factor=2, operations=("add",))
    splits = generate_splits(spec, {"train": 600, "validation": 100, "test": 300})
    all_questions = [r["question"] for recs in splits.values() for r in recs]
    assert len(all_questions) == 1000
    assert len(set(all_questions)) == 1000


def test_same_spec_gives_identical_splits():
    sizes = {"train": 200, "validation": 20, "test": 50}
    assert generate_splits(DEFAULT, sizes) == generate_splits(replace(DEFAULT), sizes)


def test_deterministic_across_processes(repo_root):
    """A pure function of (seed, knobs): independent of the interpreter's hash seed."""
    code = (
        "import json; from distill.data.arith import ArithSpec, generate_splits; "
        "s = ArithSpec(seed=1234, min_steps=2, max_steps=3, max_number=20, max_factor=3, operations=('add','sub','mul')); "
        "print(json.dumps(generate_splits(s, {'train': 30, 'test': 10})))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env, capture_output=True, text=True, check=True)
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1] == generate_splits(DEFAULT, {"train": 30, "test": 10})


def test_different_seed_gives_different_splits():
    sizes = {"train": 100, "test": 50}
    a = generate_splits(DEFAULT, sizes)
    b = generate_splits(replace(DEFAULT, seed=DEFAULT.seed + 1), sizes)
    for split in sizes:
        overlap = {r["question"] for r in a[split]} & {r["question"] for r in b[split]}
        assert len(overlap) < len(a[split]) // 2


def test_test_split_does_not_depend_on_train_size():
    """Held-out questions are reserved first, so growing train never changes test."""
    small = generate_splits(DEFAULT, {"train": 10, "test": 50})
    large = generate_splits(DEFAULT, {"train": 500, "test": 50})
    assert small["test"] == large["test"]
    assert large["train"][:10] == small["train"]


def test_knobs_change_the_data():
    sizes = {"train": 50}
    base = generate_splits(DEFAULT, sizes)["train"]
    for change in ({"max_number": 30}, {"max_steps": 4}, {"operations": ("add", "mul")}):
        assert generate_splits(replace(DEFAULT, **change), sizes)["train"] != base, change


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"min_steps": 0}, "min_steps"),
        ({"min_steps": 4, "max_steps": 3}, "min_steps"),
        ({"max_number": 1}, "max_number"),
        ({"operations": ()}, "operations"),
        ({"operations": ("add", "div")}, "operations"),
        ({"max_factor": 1}, "max_factor"),
    ],
)
def test_bad_knobs_raise_config_error(change, fragment):
    spec = replace(DEFAULT, **change)
    with pytest.raises(ConfigError, match=fragment):
        spec.validate()
    with pytest.raises(ConfigError, match=fragment):
        generate_splits(spec, {"train": 5})


def test_max_factor_is_irrelevant_without_mul():
    spec = replace(DEFAULT, operations=("add", "sub"), max_factor=0)
    records = generate_splits(spec, {"train": 20})["train"]
    for record in records:
        check_problem(record, spec)


def test_too_many_requested_problems_raise_config_error():
    # 20 names x 12 items x 2 start values x 2 amounts = 960 distinct problems in all.
    spec = ArithSpec(seed=0, min_steps=1, max_steps=1, max_number=2, max_factor=2, operations=("add",))
    with pytest.raises(ConfigError, match="distinct"):
        generate_splits(spec, {"train": 1000})


def test_sub_only_is_rejected_with_config_error():
    spec = ArithSpec(seed=1, min_steps=3, max_steps=5, max_number=5, max_factor=2, operations=("sub",))
    with pytest.raises(ConfigError, match="sub"):
        generate_splits(spec, {"train": 50})


def test_checker_rejects_corrupted_records():
    """The checker above is not vacuous: a wrong sum, a broken chain or a wrong final answer fail it."""
    spec = replace(DEFAULT, operations=("add",), min_steps=2, max_steps=2)
    record = generate_splits(spec, {"train": 1})["train"][0]
    check_problem(record, spec)
    lines = record["answer"].split("\n")
    a, _, k, _, r = lines[0].split()
    corruptions = [
        "\n".join([f"{a} + {k} = {int(r) + 1}"] + lines[1:]),  # wrong arithmetic
        "\n".join([lines[0], lines[1].replace(f"{r} +", f"{int(r) + 1} +", 1)] + lines[2:]),  # broken chain
        "\n".join(lines[:-1] + [f"#### {int(lines[-1].split()[1]) + 1}"]),  # wrong final answer
    ]
    for answer in corruptions:
        assert answer != record["answer"]
        with pytest.raises(AssertionError):
            check_problem({**record, "answer": answer}, spec)
