"""The run config: one typed tree, read from YAML plus dotted command-line overrides.

    cfg = load_config("configs/dialogue/smollm2-chitchat.yaml", ["train.learning_rate=1e-4"])
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from tailor.config.base import build, describe, setting, to_dict
from tailor.config.data import DataConfig
from tailor.config.decode import DecodeConfig
from tailor.config.evaluation import EvalConfig
from tailor.config.model import ModelConfig
from tailor.config.search import SearchConfig
from tailor.config.train import TrainConfig
from tailor.data.files import not_text, read_text
from tailor.errors import TailorError

__all__ = ["Config", "load_config", "config_from_dict", "dump_config", "describe"]


@dataclass
class Config:
    name: str = setting("", help="Run name; the run folder is <output_dir>/<name>. Empty: the config file's stem.")
    task: Literal["dialogue", "translation", "classification", "text"] = setting(
        "dialogue", help="Task family: dialogue, translation, classification or text (free text generation)."
    )
    output_dir: str = setting("runs", help="Folder that holds run folders.")
    model: ModelConfig = setting(default_factory=ModelConfig, help="The pretrained model.")
    data: DataConfig = setting(default_factory=DataConfig, help="The task's data.")
    train: TrainConfig = setting(default_factory=TrainConfig, help="The training loop.")
    eval: EvalConfig = setting(default_factory=EvalConfig, help="Evaluation.")
    decode: DecodeConfig = setting(default_factory=DecodeConfig, help="Decoding for generation.")
    search: SearchConfig = setting(default_factory=SearchConfig, help="Hyperparameter search (`tailor search`).")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def parse_yaml(text: str, where: str) -> Any:
    """A YAML value; every way it can fail is a TailorError starting with `where` (the file, and the line
    where YAML knows it)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}, line {mark.line + 1}" if mark else where
        raise TailorError(f"{at}: not valid YAML ({getattr(e, 'problem', None) or e}).") from None
    except RecursionError:
        raise TailorError(f"{where}: not valid YAML (nested deeper than Python can read).") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a date like 2024-13-45
        raise TailorError(f"{where}: not valid YAML ({e}).") from None
    problem = not_text(data)
    if problem:
        raise TailorError(f"{where}: {problem}.")
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise TailorError(f"override '{item}' must look like section.key=value, e.g. train.learning_rate=1e-4.")
    key, raw = item.split("=", 1)
    return key.strip().split("."), parse_yaml(raw, f"override '{item}'") if raw.strip() else ""


def shorthand(data: dict) -> dict:
    """`model: NAME` is short for `model: {name: NAME}`."""
    if isinstance(data.get("model"), str):
        return {**data, "model": {"name": data["model"]}}
    return data


def set_path(data: dict, path: list[str], value, what: str) -> None:
    """data[path[0]][path[1]]... = value, making sections on the way; `what` names the setting in the error
    when a part of the path is a value, not a section."""
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise TailorError(f"{what}: '{part}' is not a config section.")
    node[path[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        path, value = _parse_override(item)
        data = shorthand(data)
        set_path(data, path, value, f"override '{item}'")
    return data


def config_from_dict(data: dict, where: str = "config") -> Config:
    return build(Config, shorthand(data) if isinstance(data, dict) else data, where)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    data = parse_yaml(read_text(path, "config file"), str(path))
    if data is None:  # an empty file: every setting at its default
        data = {}
    if not isinstance(data, dict):
        raise TailorError(f"{path}: the top level must be a mapping of settings.")
    return data


def line_of(path: Path, keys: list[str]) -> int | None:
    """The line (1-based) of the deepest of the nested settings `keys` the YAML file has; None where it has not
    the first (a value given on the command line)."""
    try:
        node = yaml.compose(read_text(path, "config file"))
    except (yaml.YAMLError, TailorError, RecursionError, ValueError):
        return None
    line = None
    for key in keys:
        found = isinstance(node, yaml.MappingNode) and next(
            (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        if not found:
            break
        node, line = found, found.start_mark.line + 1
    return line


def located(error: TailorError, path: Path, overridden: set[str] = frozenset()) -> TailorError:
    """A config file's error naming a setting ("FILE.train.optimizer: ...") with the setting's line in the file;
    as it is where the value came from the command line (`overridden`: the overrides' dotted keys)."""
    message, prefix = str(error), f"{path}."
    if not message.startswith(prefix):
        return error
    dotted, _, rest = message[len(prefix):].partition(": ")
    if any(dotted == key or dotted.startswith(key + ".") for key in overridden):
        return error
    keys = [k.split("[")[0] for k in dotted.split(".")]
    unknown = re.match(r"unknown key '([^']*)'", rest)
    line = line_of(path, keys + ([unknown.group(1)] if unknown else []))
    return error if line is None else TailorError(f"{path}, line {line}: {dotted}: {rest}")


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    data = apply_overrides(read_yaml(path), overrides or [])
    data = shorthand(data)
    data.setdefault("name", Path(path).stem)
    if not data["name"]:
        data["name"] = Path(path).stem
    try:
        return config_from_dict(data, where=str(path))
    except TailorError as error:
        raise located(error, Path(path), {o.split("=", 1)[0].strip() for o in overrides or []}) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def replace(cfg: Config, **sections: Any) -> Config:
    return dataclasses.replace(cfg, **sections)
