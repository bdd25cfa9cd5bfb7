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
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, list) and args and args[0] in (int, float, str):
        return f"a list of {'numbers' if args[0] is float else names[args[0]].removeprefix('a ').removeprefix('an ') + 's'}"
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


def check_keys(values: dict, known: Any, section: str, required: Any = ()) -> None:
    """Every key of ``values`` is one of ``known`` and every ``required`` key is present; errors name the key
    (a ``+section.key=`` override that nothing reads is refused, not silently ignored)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section} must be a mapping, got {values!r}")
    unknown = sorted(set(values) - set(known))
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), [str(k) for k in known], n=1)
        hint = (f"did you mean {_key(section, close[0])}?" if close else
                f"the settings of {section or 'the config'}: {', '.join(sorted(map(str, known)))}" if known else
                f"{section} takes no settings")
        raise ConfigError(f"{_key(section, unknown[0])} is not a setting ({hint}); check its spelling, or drop it")
    missing = [key for key in required if key not in values]
    if missing:
        raise ConfigError(f"{_key(section, missing[0])} is required; set {_key(section, missing[0])}=...")


def _key(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def build(cls: type, values: dict, section: str):
    """``cls(**values)`` for a config dataclass, with unknown and missing keys named instead of a TypeError."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    check_keys(values, fields, section, required)
    return cls(**values)


def check_arguments(fn: Any, values: dict, section: str) -> None:
    """Keys and types of keyword arguments for ``fn`` (a class: its ``__init__``), from its annotations;
    called before ``fn`` runs so a value like ``lots`` for a float is named, not a TypeError deep inside."""
    import inspect

    target = fn.__init__ if isinstance(fn, type) else fn
    params = {name: p for name, p in inspect.signature(fn).parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = [name for name, p in params.items() if p.default is inspect.Parameter.empty]
    check_keys(values, params, section, required)
    hints = typing.get_type_hints(fn if dataclasses.is_dataclass(fn) else target) if params else {}
    for name, value in values.items():
        if name in hints and not _matches(value, hints[name]):
            raise ConfigError(f"{section}.{name} must be {_describe(hints[name])}, got {value!r}")


def check_choice(section: str, name: str, value: Any, choices: Any) -> None:
    if value not in tuple(choices):
        raise ConfigError(f"{section}.{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_count(section: str, name: str, value: Any, low: int = 1, allow_none: bool = False) -> None:
    """An integer ``>= low`` (or null when ``allow_none``)."""
    if allow_none and value is None:
        return
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        suffix = " or null" if allow_none else ""
        raise ConfigError(f"{_key(section, name)} must be an integer >= {low}{suffix}, got {value!r}")
