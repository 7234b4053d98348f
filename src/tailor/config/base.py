"""Typed config sections built from plain dicts, with errors that name the bad key.

Each section is a dataclass; each field carries its help text in `metadata["help"]`, so the
valid keys and what they mean can be listed wherever a key is wrong.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any

from tailor.errors import TailorError


def setting(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A config field with its help text. Mutable defaults go through `default_factory`."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except TailorError as e:
                # the error of the arm of the value's own shape says most ({column: file} with a bad file)
                shaped = isinstance(value, (dict, list)) and typing.get_origin(arg) in (dict, list)
                errors.insert(0, str(e)) if shaped else errors.append(str(e))
        words = [repr(v) for arg in args if typing.get_origin(arg) is typing.Literal for v in typing.get_args(arg)]
        if errors and words and not isinstance(value, (dict, list)):  # int | Literal["auto"]: name the words too
            raise TailorError(f"{errors[0].rstrip('.')}, or one of {', '.join(words)}.")
        raise TailorError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise TailorError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}.")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TailorError(f"{where}: expected a list, got {value!r}.")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TailorError(f"{where}: expected a mapping, got {value!r}.")
        if args:  # e.g. {column: file}: a number or a list as a file name would fail much later
            return {_coerce(k, args[0], f"{where} (a key)"): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            value = float(value)  # YAML reads "3e-4" as a string
        except (ValueError, OverflowError):
            pass
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise TailorError(f"{where}: expected a finite number, got {value}.")
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise TailorError(f"{where}: expected {hint.__name__}, got {value!r}.")
    return value


def check_range(name: str, value: float, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, note: str = "") -> None:
    """Refuse a number outside [low, high] (an open end excludes the bound) or not finite: a value that
    passes here must not break the run later, after its folder exists."""
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        span = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise TailorError(f"{name} must be in {span}{note}, got {value}.")


def build(cls: type, data: Any, where: str = "config") -> Any:
    """Make `cls` from a dict, rejecting unknown keys with the list of valid ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TailorError(f"{where}: expected a mapping of settings, got {data!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            valid = sorted(fields)
            raise TailorError(
                f"{where}: unknown key '{key}'.{_closest(str(key), valid)} "
                f"Valid keys here: {', '.join(valid)}."
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TailorError as e:
        raise TailorError(f"{where}: {e}") from None


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, help) for every setting, for `tailor config --help`-style listings."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", f.metadata.get("help", "")))
    return rows


def flat(data: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys: {"train": {"learning_rate": 1e-4}} -> {"train.learning_rate": 1e-4}.

    >>> flat({"train": {"learning_rate": 1e-4, "betas": [0.9, 0.99]}, "name": "x"})
    {'train.learning_rate': 0.0001, 'train.betas': [0.9, 0.99], 'name': 'x'}
    """
    out: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
