"""Type checks for the plain config dataclasses (TrainerSettings, TaskSpec, EvalSettings).

Hydra passes command-line values through as typed by the YAML grammar, so
``trainer.max_steps=abc`` arrives as the string "abc" and would fail deep
inside training. Each dataclass calls ``check_field_types`` first: the error
names the key and what it must be.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from distill.errors import ConfigError


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    return {tuple: "a list", list: "a list", dict: "a mapping"}.get(origin, getattr(hint, "__name__", str(hint)))


def check_field_types(obj: Any, section: str) -> None:
    """Raise a ConfigError naming ``section.field`` for the first field whose value has the wrong type."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if not _matches(value, hints[field.name]):
            raise ConfigError(f"{section}.{field.name} must be {_describe(hints[field.name])}, got {value!r}")


def check_range(section: str, name: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """``low <= value <= high`` (or strict at an open end), and finite."""
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{left}, {right}{')' if high_open or high is None else ']'}"
        raise ConfigError(f"{section}.{name} must be a finite number in {interval}, got {value!r}")
