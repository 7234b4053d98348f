"""The search space: each entry names a config key by its dotted path and how to draw its value.

Because a trial's config is the base config with dotted overrides applied, any setting the
config knows (now or later: LoRA rank, frozen layers, dropout, decoding) can be searched.
"""

from __future__ import annotations

import copy
import math

import optuna

from tailor.config import Config, config_from_dict, set_path, to_dict
from tailor.errors import TailorError


def suggest(trial: optuna.Trial, key: str, spec: dict):
    """Draw the value of one dotted key for a trial (`spec` as normalised by search config)."""
    kind = spec["type"]
    if kind == "categorical":
        return trial.suggest_categorical(key, spec["choices"])
    if kind == "int":
        return trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step") or 1, log=bool(spec.get("log")))
    return trial.suggest_float(key, spec["low"], spec["high"], step=spec.get("step"), log=bool(spec.get("log")))


def grid_values(key: str, spec: dict) -> list:
    """The values grid search tries for one key: choices, an explicit grid, or low..high by step."""
    if spec["type"] == "categorical":
        return list(spec["choices"])
    if "grid" in spec:
        return list(spec["grid"])
    step = spec.get("step") or (1 if spec["type"] == "int" else None)
    if step is None:
        raise TailorError(f"search.space.{key}: grid search needs 'grid: [values]' or a 'step' for a float parameter.")
    count = int(math.floor((spec["high"] - spec["low"]) / step + 1e-9)) + 1
    values = [spec["low"] + i * step for i in range(count)]
    return [int(v) for v in values] if spec["type"] == "int" else [round(v, 12) for v in values]


def set_dotted(data: dict, key: str, value) -> None:
    set_path(data, key.split("."), value, f"search.space: '{key}'")


def get_dotted(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def trial_config(base: Config, params: dict, **top) -> Config:
    """The base config with the trial's values (and top-level keys such as name) applied."""
    data = copy.deepcopy(to_dict(base))
    for key, value in params.items():
        set_dotted(data, key, value)
    data.update(top)
    return config_from_dict(data, where="search trial config")


def check_space(base: Config) -> None:
    """Fail before any trial runs if a key is unknown or a value makes an invalid config."""
    space = base.search.space
    if not space:
        raise TailorError(
            "search.space is empty: add the settings to search, e.g.\n"
            "search:\n  space:\n    train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}"
        )
    for key, spec in space.items():
        if key.split(".")[0] in ("search", "name", "output_dir"):
            raise TailorError(f"search.space.{key}: this key cannot be searched.")
        if get_dotted(to_dict(base), key) is None and "." in key and get_dotted(to_dict(base), key.rsplit(".", 1)[0]) is None:
            raise TailorError(f"search.space.{key}: the config has no section '{key.rsplit('.', 1)[0]}'.")
        probes = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in probes:
            try:
                trial_config(base, {key: value})
            except TailorError as e:
                raise TailorError(f"search.space.{key} = {value!r}: {e}") from None


def baseline_params(base: Config) -> dict | None:
    """The base config's own values of the searched keys, if every one lies inside the space."""
    values = {}
    data = to_dict(base)
    for key, spec in base.search.space.items():
        value = get_dotted(data, key)
        if spec["type"] == "categorical":
            if value not in spec["choices"]:
                return None
        elif value is None or not spec["low"] <= value <= spec["high"]:
            return None
        values[key] = value
    return values
