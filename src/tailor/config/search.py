"""Hyperparameter search (`tailor search`): the space over dotted config keys, sampler and pruner.

    search:
      space:
        train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
        train.batch_size: {type: categorical, choices: [4, 8]}
        train.warmup_steps: {type: int, low: 0, high: 10, step: 2}

The objective is the best validation value of `eval.metric` (direction `eval.mode`) during each trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tailor.config.base import check_range, setting
from tailor.errors import TailorError

PARAM_TYPES = ("float", "int", "categorical")
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "grid"}


def check_param(key: str, spec: Any) -> dict:
    """Normalise one entry of `search.space`; a bare list means a categorical choice."""
    where = f"search.space.{key}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise TailorError(f"{where}: expected a mapping like {{type: float, low: 1e-5, high: 1e-3, log: true}} "
                          f"or a list of choices, got {spec!r}.")
    unknown = set(spec) - PARAM_KEYS
    if unknown:
        raise TailorError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(PARAM_KEYS))}.")
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind not in PARAM_TYPES:
        raise TailorError(f"{where}: type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}.")
    spec = {**spec, "type": kind}
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise TailorError(f"{where}: a categorical parameter needs a non-empty 'choices' list.")
        return spec
    for bound in ("low", "high"):
        if bound not in spec:
            raise TailorError(f"{where}: a {kind} parameter needs '{bound}'.")
        try:
            spec[bound] = float(spec[bound]) if kind == "float" else int(spec[bound])
        except (TypeError, ValueError, OverflowError):
            raise TailorError(f"{where}.{bound}: expected a number, got {spec[bound]!r}.") from None
        check_range(f"{where}.{bound}", spec[bound])
    if spec["low"] > spec["high"]:
        raise TailorError(f"{where}: low ({spec['low']}) is above high ({spec['high']}).")
    if spec.get("log") and spec["low"] <= 0:
        raise TailorError(f"{where}: a log-scale parameter needs low > 0, got {spec['low']}.")
    if spec.get("log") and spec.get("step") not in (None, 1):
        raise TailorError(f"{where}: 'step' and 'log' cannot be combined.")
    if "grid" in spec and not (isinstance(spec["grid"], list) and spec["grid"]):
        raise TailorError(f"{where}.grid: expected a non-empty list of values.")
    return spec


@dataclass
class SearchConfig:
    space: dict[str, Any] = setting(
        {},
        help="Search space: dotted config key -> {type: float|int|categorical, low, high, log, step, choices, grid}; "
        "a list is shorthand for categorical choices. 'grid' lists the values a float/int takes in grid search.",
    )
    trials: int = setting(20, help="Finished (complete or pruned) trials the study aims for; `--trials` overrides it.")
    timeout: float = setting(0.0, help="Stop starting new trials after this many seconds (0 = no limit); `--timeout` overrides it.")
    sampler: Literal["tpe", "random", "grid"] = setting("tpe", help="How trials pick values: TPE (Bayesian), random, or every grid point.")
    pruner: Literal["median", "hyperband", "asha", "none"] = setting(
        "median", help="Stops bad trials early from their intermediate validation values (asha = successive halving)."
    )
    startup_trials: int = setting(2, help="Median pruner: trials that run to the end before any is pruned.")
    min_steps: int = setting(
        1, help="No pruning before this optimizer step (median warm-up; minimum resource of hyperband/asha)."
    )
    reduction_factor: int = setting(3, help="Hyperband/asha: keep 1/reduction_factor of trials at each rung.")
    baseline: bool = setting(True, help="Run the config's own values first (trial 0), so the report compares best vs default.")
    keep_models: Literal["best", "all", "none"] = setting(
        "best", help="Which trials keep their model/ folder; checkpoints of finished trials are always deleted."
    )
    seed: int = setting(0, help="Seed of the sampler.")

    def __post_init__(self) -> None:
        self.space = {str(k): check_param(str(k), v) for k, v in self.space.items()}
        check_range("trials", self.trials, 1, 10**6)
        check_range("timeout", self.timeout, 0, None, note=" (0 = no limit)")
        check_range("startup_trials", self.startup_trials, 0, 10**6)
        check_range("min_steps", self.min_steps, 1, 10**9)
        check_range("reduction_factor", self.reduction_factor, 2, 1000)
        check_range("seed", self.seed, 0, 2**32 - 1)
