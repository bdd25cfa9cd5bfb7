"""Evaluation settings (``conf/evaluation/default.yaml``) and the decodings they ask for.

Checked whole before anything is written: a bad value is one line naming
``eval.KEY``, never a traceback or an evaluation directory left behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.errors import ConfigError
from distill.fields import check_choice, check_count, check_field_types, check_keys, check_range
from distill.models.generation import STRATEGIES, Decoding

SPECULATIVE_KEYS = ("draft", "num_proposals")


@dataclass(frozen=True)
class EvalSettings:
    """Plain mirror of ``conf/evaluation/default.yaml``; fields documented there."""

    after_train: bool
    compare_teacher: bool
    split: str
    batch_size: int
    num_samples: int
    sampling_temperature: float
    sampling_temperatures: list[float]
    strategy: str | None
    num_beams: int | None
    max_new_tokens: int | None
    progress: bool
    speculative: dict | None = None

    def __post_init__(self) -> None:
        check_field_types(self, "eval")
        check_count("eval", "batch_size", self.batch_size)
        check_count("eval", "num_samples", self.num_samples)
        check_count("eval", "num_beams", self.num_beams, allow_none=True)
        check_count("eval", "max_new_tokens", self.max_new_tokens, allow_none=True)
        check_range("eval", "sampling_temperature", self.sampling_temperature, 0.0, low_open=True)
        for temperature in self.sampling_temperatures:
            check_range("eval", "sampling_temperatures", temperature, 0.0, low_open=True)
        if self.strategy is not None:
            check_choice("eval", "strategy", self.strategy, STRATEGIES)
        spec = self.speculative or {}
        check_keys(spec, SPECULATIVE_KEYS, "eval.speculative")
        if spec.get("draft") is not None:
            if not isinstance(spec["draft"], str):
                raise ConfigError(f"eval.speculative.draft must be a checkpoint path or null, got {spec['draft']!r}")
            check_count("eval.speculative", "num_proposals", spec.get("num_proposals"))

    def check_split(self, splits: dict) -> None:
        """``eval.split`` names one of the task's splits (train, validation, test)."""
        check_choice("eval", "split", self.split, tuple(splits))


def decodings(task, settings: EvalSettings) -> list[Decoding]:
    """The primary decoding (task default unless overridden), then the sampled ones. A setting of 0 is the
    user's value (refused by the checks above), never a request for the default: only null means default."""
    default = task.decoding
    max_new = _or_default(settings.max_new_tokens, default["max_new_tokens"])
    strategy = _or_default(settings.strategy, default["strategy"])
    primary = Decoding(strategy, max_new, _or_default(settings.num_beams, default.get("num_beams", 1)),
                       settings.sampling_temperature if strategy == "sample" else None,
                       settings.num_samples if strategy == "sample" else 1)
    out = [primary]
    if settings.num_samples > 1 and strategy != "sample":
        out.append(Decoding("sample", max_new, 1, settings.sampling_temperature, settings.num_samples))
    for temperature in settings.sampling_temperatures:
        out.append(Decoding("sample", max_new, 1, float(temperature), settings.num_samples))
    unique = {d.name: d for d in out}
    return list(unique.values())


def _or_default(value, default):
    return default if value is None else value
