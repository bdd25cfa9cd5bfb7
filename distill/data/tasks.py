"""Task data: the generated arith task, local JSONL directories and hub datasets.

Every task is reduced to records with a source and a target field (named by
the task config); prompts are formatted later, per architecture.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.data.arith import generate_splits, generator_spec
from distill.data.lingua import LinguaSpec, generate_lingua, lingua_spec
from distill.errors import ConfigError, DataError
from distill.fields import check_choice, check_count, check_field_types, check_keys, check_range
from distill.io import read_jsonl
from distill.models.generation import Decoding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """Plain mirror of a ``conf/task/*.yaml`` file; fields are documented there."""

    name: str
    metric: str
    source_field: str
    target_field: str
    prompt: dict[str, str]
    splits: dict[str, str]
    max_source_length: int
    max_target_length: int
    decoding: dict[str, Any]
    data_dir: str | None = None
    hub: dict[str, Any] | None = None
    generator: dict[str, Any] | None = None
    validation_from_train: int = 0
    train_fraction: float = 1.0
    labeled_fraction: float = 1.0
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    references_field: str | None = None  # a list of every correct output (multi-reference scoring)
    start_examples: int | None = None  # the first N train records: the SFT-initialised student's own data

    def __post_init__(self) -> None:
        """Every field checked before any data or model loads; errors name ``task.KEY``."""
        check_field_types(self, "task")
        from distill.metrics import METRIC_KEYS  # the scorers' own list (imported here: rouge-score is slow to load)

        check_choice("task", "metric", self.metric, sorted(METRIC_KEYS))
        for key in ("train_fraction", "labeled_fraction"):
            check_range("task", key, getattr(self, key), 0.0, 1.0, low_open=True)
        for key in ("max_train_examples", "max_eval_examples"):
            check_count("task", key, getattr(self, key), allow_none=True)
        check_count("task", "max_source_length", self.max_source_length)
        check_count("task", "max_target_length", self.max_target_length)
        check_count("task", "validation_from_train", self.validation_from_train, low=0)
        check_count("task", "start_examples", self.start_examples, allow_none=True)
        if self.start_examples and self.labeled_fraction < 1.0:
            raise ConfigError("task.start_examples gives the run labelled data after the student's own; it does not "
                              "combine with task.labeled_fraction < 1 (set one of them)")
        check_keys(self.splits, SPLITS, "task.splits", required=SPLITS)
        check_keys(self.prompt, PROMPT_KEYS, "task.prompt", required=("encoder_decoder", "decoder"))
        for key, template in self.prompt.items():
            _check_template(f"task.prompt.{key}", template)
        Decoding.from_config(self.decoding, "task.decoding")
        if self.generator is not None and self.data_dir is None:
            _generator(self.generator, self.splits)

    @property
    def fields(self) -> tuple[str, str]:
        return (self.source_field, self.target_field)


SPLITS = ("train", "validation", "test")
PROMPT_KEYS = ("encoder_decoder", "decoder", "decoder_target_prefix")


def _check_template(key: str, template: str) -> None:
    """A prompt template is ``str.format`` text whose fields name record fields: ``{question}``."""
    import string

    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{key} is not a valid template ({exc}); write record fields as {{name}} and literal "
                          "braces as {{{{ and }}}}") from None
    positional = [name for name in fields if name == "" or name.isdigit()]
    if positional:
        raise ConfigError(f"{key} has a positional field {{{positional[0]}}}; name the record field instead, "
                          "e.g. {question}")


_GENERATED: dict[str, dict[str, list[dict]]] = {}


def _generated(spec: TaskSpec) -> dict[str, list[dict]]:
    """All generated splits at once (they are drawn jointly to stay disjoint), memoised per process."""
    key = json.dumps([spec.generator, spec.splits], sort_keys=True)
    if key not in _GENERATED:
        _GENERATED.clear()
        _GENERATED[key] = _generate(spec)
    return _GENERATED[key]


def _generator(values: dict, splits: dict):
    """The checked knobs of ``task.generator``; ``kind`` picks the generator (arith when absent)."""
    kind = values.get("kind", "arith") if isinstance(values, dict) else None
    check_choice("task.generator", "kind", kind, ("arith", "lingua"))
    if kind == "lingua":
        return lingua_spec(values, splits)
    return generator_spec({k: v for k, v in values.items() if k != "kind"}, splits)


def _generate(spec: TaskSpec) -> dict[str, list[dict]]:
    knobs = _generator(spec.generator, spec.splits)
    names = lambda sizes: {spec.splits[s]: n for s, n in sizes.items() if s in spec.splits}  # noqa: E731
    if isinstance(knobs[0], LinguaSpec):
        return generate_lingua(knobs[0], names(knobs[1]))
    arith, sizes, shifted = knobs
    return generate_splits(arith, names(sizes), shifted)


def _local(spec: TaskSpec, split_name: str) -> list[dict]:
    directory = Path(spec.data_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"task {spec.name}: task.data_dir={spec.data_dir} is not a directory")
    path = directory / f"{split_name}.jsonl"
    if not path.exists():
        present = sorted(p.name for p in directory.glob("*.jsonl"))
        logical = next((k for k, v in spec.splits.items() if v == split_name), "train")
        example = next((p.removesuffix(".jsonl") for p in present if p != "test.jsonl"), "NAME")
        raise DataError(f"task {spec.name}: no {path.name} in {directory} (found {present}); set "
                        f"task.splits.{logical} to an existing file, e.g. task.splits.{logical}={example}")
    return read_jsonl(path, required_fields=spec.fields, text_fields=spec.fields)


def _hub(spec: TaskSpec, split_name: str) -> list[dict]:
    if not spec.hub:
        raise ConfigError(f"task {spec.name}: neither task.data_dir nor task.hub is set")
    try:
        import datasets

        data = datasets.load_dataset(spec.hub["path"], spec.hub.get("name"), split=split_name)
    except Exception as exc:  # offline, missing split, unknown name: all one message
        raise DataError(
            f"task {spec.name}: cannot load hub dataset {spec.hub['path']} split {split_name} "
            f"({type(exc).__name__}); set task.data_dir=DIR with {{train,validation,test}}.jsonl"
        ) from None
    nested = spec.hub.get("nested_field")  # wmt14 stores {"translation": {"de":..., "en":...}}
    return [dict(row[nested]) if nested else dict(row) for row in data]


def _carve_validation(spec: TaskSpec, split: str, load, count: int) -> list[dict]:
    """GSM8K has no validation split: the last ``count`` train records serve, and train drops them."""
    train = load(spec.splits["train"])
    if count >= len(train):
        raise ConfigError(f"task {spec.name}: validation_from_train={count} leaves no train data")
    cut = len(train) - count
    return train[cut:] if split == "validation" else train[:cut]


_WARNED: set[str] = set()


def _validation_slice(spec: TaskSpec, load) -> int:
    """How many train records to hold out as validation: ``validation_from_train``, or, when train and
    validation name one file (XSum's local copy has no train split), a tenth of it (at most 500), so
    validation never scores the very documents the run trains on."""
    if spec.validation_from_train or spec.splits.get("train") != spec.splits.get("validation"):
        return spec.validation_from_train
    count = min(500, max(1, len(load(spec.splits["train"])) // 10))
    if spec.name not in _WARNED:
        _WARNED.add(spec.name)
        log.warning("task %s: train and validation are both %r; the last %d records serve as validation only "
                    "(set task.validation_from_train to choose how many)", spec.name, spec.splits["train"], count)
    return count


def load_split(spec: TaskSpec, split: str) -> list[dict]:
    """Records of one logical split (train | validation | test), subsetting applied."""
    return subset_split(spec, split, full_split(spec, split))


def full_split(spec: TaskSpec, split: str) -> list[dict]:
    """Records of one logical split, checked and filtered, before subsetting."""
    if split not in spec.splits:
        raise ConfigError(f"task {spec.name}: unknown split {split!r}; task.splits has {sorted(spec.splits)}")
    if spec.generator is not None and spec.data_dir is None:
        records = _generated(spec)[spec.splits[split]]
    else:
        load = (lambda name: _local(spec, name)) if spec.data_dir else (lambda name: _hub(spec, name))
        count = _validation_slice(spec, load) if split in ("train", "validation") else 0
        records = _carve_validation(spec, split, load, count) if count else load(spec.splits[split])
    for position, record in enumerate(records):
        missing = [f for f in spec.fields if f not in record]
        if missing:
            raise DataError(f"task {spec.name}: split {split} records lack field(s) {missing}; they have {sorted(record)}")
        listed = record.get(spec.references_field) if spec.references_field else [""]
        if not (isinstance(listed, list) and listed and all(isinstance(r, str) for r in listed)):
            raise DataError(f"task {spec.name}: split {split} record {position}: field {spec.references_field!r} must "
                            f"be a non-empty list of strings (every correct output), got {listed!r:.80}")
        wrong = [f for f in spec.fields if not isinstance(record[f], str)]
        if wrong:
            raise DataError(f"task {spec.name}: split {split} record {position}: field {wrong[0]!r} must be a string, "
                            f"got {record[wrong[0]]!r}")
    return [r for r in records if str(r[spec.source_field]).strip()]  # XSum has a few empty documents


def subset_split(spec: TaskSpec, split: str, records: list[dict]) -> list[dict]:
    """``full_split`` records cut to the task's fraction and caps; an empty result is an error."""
    records = _subset(spec, split, records)
    if not records:
        raise DataError(f"task {spec.name}: split {split} is empty after filtering; check task.data_dir and task.splits")
    return records


def _subset(spec: TaskSpec, split: str, records: list[dict]) -> list[dict]:
    # A prefix, not a random sample: smaller fractions are subsets of larger ones,
    # which is what a data-efficiency curve needs.
    if split == "train":
        keep = max(1, math.floor(len(records) * spec.train_fraction))
        if spec.max_train_examples is not None:
            keep = min(keep, spec.max_train_examples)
        return records[:keep]
    if spec.max_eval_examples is not None:
        return records[: spec.max_eval_examples]
    return records


@dataclass
class Example:
    """One formatted pair; ``source`` is what the model is prompted with."""

    source: str
    target: str
    record: dict = field(default_factory=dict, repr=False)


def format_examples(spec: TaskSpec, records: list[dict], encoder_decoder: bool) -> list[Example]:
    """Prompts per architecture: T5-style task prefix, or a decoder-only template."""
    template = spec.prompt["encoder_decoder" if encoder_decoder else "decoder"]
    target_prefix = "" if encoder_decoder else spec.prompt.get("decoder_target_prefix", "")
    try:
        return [Example(template.format(**r), target_prefix + str(r[spec.target_field]).strip(), r) for r in records]
    except KeyError as exc:
        raise ConfigError(f"task {spec.name}: prompt template names field {exc} that the records lack") from None


def labeled_count(spec: TaskSpec, num_records: int) -> int:
    """How many leading records of the whole train split keep their targets (``task.labeled_fraction``)."""
    return max(1, math.ceil(num_records * spec.labeled_fraction))


def tokenizer_corpus(spec: TaskSpec, records: list[dict]) -> list[str]:
    """Texts a tiny tokenizer is trained on: raw fields plus the templates' own words."""
    texts = [t.format_map(_Blank()) for t in spec.prompt.values()]
    for r in records:
        texts.append(str(r[spec.source_field]))
        texts.append(str(r[spec.target_field]))
    return texts


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""
