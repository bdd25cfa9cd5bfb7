"""The offline default task: seeded multi-step arithmetic word problems.

Records look like GSM8K ({question, answer}); the answer shows one line of
working per step and ends in ``#### N`` so the GSM8K scorer applies unchanged.
Every split is a pure function of (seed, knobs), and no question of one split
appears in another, so a test score never rewards memorised training items.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from distill.errors import ConfigError
from distill.fields import check_count, check_field_types, check_keys

NAMES = ("Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivy", "Jon",
         "Kim", "Leo", "Mia", "Noah", "Olga", "Pam", "Raj", "Sam", "Tia", "Uma")
ITEMS = ("apples", "marbles", "stickers", "coins", "books", "pens", "cards",
         "shells", "stamps", "eggs", "beads", "toys")
OPERATIONS = ("add", "sub", "mul")
SPLIT_OFFSETS = {"train": 0, "validation": 1, "test": 2}


@dataclass(frozen=True)
class ArithSpec:
    """Knobs of the generator; documented in conf/task/arith.yaml."""

    seed: int
    min_steps: int
    max_steps: int
    max_number: int
    max_factor: int
    operations: tuple[str, ...]

    def validate(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ConfigError(f"task.generator: need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.max_number < 2:
            raise ConfigError(f"task.generator.max_number must be >= 2, got {self.max_number}")
        unknown = set(self.operations) - set(OPERATIONS)
        if unknown or not self.operations:
            raise ConfigError(f"task.generator.operations must be a non-empty subset of {list(OPERATIONS)}, got {list(self.operations)}")
        if set(self.operations) == {"sub"}:
            raise ConfigError("task.generator.operations=[sub] alone cannot continue once a value reaches 0; add 'add' or 'mul'")
        if "mul" in self.operations and self.max_factor < 2:
            raise ConfigError(f"task.generator.max_factor must be >= 2 when 'mul' is used, got {self.max_factor}")


GENERATOR_KEYS = ("sizes", "shift")  # besides ArithSpec's knobs


def generator_spec(values: dict, splits: dict) -> tuple[ArithSpec, dict[str, int], tuple[int, ArithSpec] | None]:
    """(knobs, split sizes, shift) from ``task.generator``; every key and value checked, errors name it."""
    section = "task.generator"
    knobs = {k: v for k, v in values.items() if k not in GENERATOR_KEYS}
    check_keys(values, tuple(ArithSpec.__dataclass_fields__) + GENERATOR_KEYS, section,
               required=tuple(ArithSpec.__dataclass_fields__) + ("sizes",))
    if isinstance(knobs.get("operations"), list):
        knobs["operations"] = tuple(knobs["operations"])
    spec = ArithSpec(**knobs)
    check_field_types(spec, section)
    spec.validate()
    sizes = values["sizes"]
    check_keys(sizes, tuple(splits), f"{section}.sizes")
    for split, size in sizes.items():
        check_count(f"{section}.sizes", split, size)
    return spec, sizes, _shift(values.get("shift"), spec)


def _shift(shift: dict | None, spec: ArithSpec) -> tuple[int, ArithSpec] | None:
    if shift is None:
        return None
    knobs = {k: (tuple(v) if k == "operations" and isinstance(v, list) else v) for k, v in shift.items() if k != "at"}
    changeable = set(ArithSpec.__dataclass_fields__) - {"seed"}  # the seed stays the task's
    if not isinstance(shift, dict) or set(knobs) - changeable:
        raise ConfigError(f"task.generator.shift needs an integer `at` >= 0 and generator knobs "
                          f"({', '.join(sorted(changeable))}), got {shift}")
    check_count("task.generator.shift", "at", shift.get("at"), low=0)
    shifted = replace(spec, **knobs)
    check_field_types(shifted, "task.generator.shift")
    shifted.validate()
    return shift["at"], shifted


def _step(rng: random.Random, spec: ArithSpec, value: int, pronoun: str, item: str) -> tuple[str, str, int]:
    """One operation: (sentence of the question, line of working, new value)."""
    ops = [op for op in spec.operations if not (op == "sub" and value == 0)]
    op = rng.choice(ops)
    if op == "add":
        k = rng.randint(1, spec.max_number)
        return f"{pronoun} gets {k} more {item}.", f"{value} + {k} = {value + k}", value + k
    if op == "sub":
        k = rng.randint(1, value)
        return f"{pronoun} gives away {k} {item}.", f"{value} - {k} = {value - k}", value - k
    k = rng.randint(2, spec.max_factor)
    return f"{pronoun} ends up with {k} times as many {item}.", f"{value} * {k} = {value * k}", value * k


def make_problem(rng: random.Random, spec: ArithSpec) -> dict[str, str]:
    name = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    value = rng.randint(1, spec.max_number)
    sentences = [f"{name} has {value} {item}."]
    working = []
    for _ in range(rng.randint(spec.min_steps, spec.max_steps)):
        sentence, line, value = _step(rng, spec, value, name if not working else "Next, " + name, item)
        sentences.append(sentence)
        working.append(line)
    sentences.append(f"How many {item} does {name} have now?")
    return {"question": " ".join(sentences), "answer": "\n".join(working + [f"#### {value}"])}


def generate_splits(spec: ArithSpec, sizes: dict[str, int],
                    shift: tuple[int, ArithSpec] | None = None) -> dict[str, list[dict[str, str]]]:
    """All requested splits; test first, so held-out questions are reserved before train.

    ``shift = (at, other)``: train problems from index ``at`` on come from the knobs ``other``
    (a distribution shift in the middle of a stream of requests; validation and test keep ``spec``).
    """
    spec.validate()
    if shift is not None:
        shift[1].validate()
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for split in sorted(sizes, key=lambda s: -SPLIT_OFFSETS.get(s, 3)):
        rng = random.Random(f"arith:{spec.seed}:{split}")
        records: list[dict[str, str]] = []
        attempts = 0
        while len(records) < sizes[split]:
            attempts += 1
            if attempts > 50 * sizes[split] + 1000:
                raise ConfigError(f"task arith: cannot make {sizes[split]} distinct {split} problems; raise task.generator.max_number or max_steps")
            knobs = shift[1] if shift is not None and split == "train" and len(records) >= shift[0] else spec
            record = make_problem(rng, knobs)
            if record["question"] not in seen:
                seen.add(record["question"])
                records.append(record)
        splits[split] = records
    return splits
