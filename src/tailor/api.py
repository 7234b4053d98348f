"""tailor from Python (notebooks, scripts): the jobs behind the CLI, returning plain objects.

    from tailor import api
    run = api.train("configs/dialogue/smollm2-chitchat.yaml", **{"train.max_steps": 20, "name": "try"})
    api.evaluate(run)["perplexity"]
    api.generate(run, ["Hi! How are you?"], max_new_tokens=32)[0]["text"]

(`tailor.api`, not `tailor.train`: `tailor.train` and `tailor.generate` are the packages.) Every function takes a config (a YAML path, a mapping, or a `tailor.config.Config`) with dotted
overrides as keyword arguments, or a run folder; bad input raises `tailor.errors.TailorError`, whose
message is the one the CLI prints. The README's "Python API" section has a worked example, run as a
doctest by the test suite (tests/test_api.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailor.config import Config, apply_overrides, config_from_dict, load_config, read_yaml
from tailor.config.base import to_dict

ConfigLike = str | Path | dict | Config


def config(source: ConfigLike, **overrides: Any) -> Config:
    """A resolved config from a YAML path, a mapping or a Config, with dotted overrides
    (`**{"train.learning_rate": 1e-4}` or `name="try2"`)."""
    items = [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in overrides.items()]
    if isinstance(source, Config):
        source = to_dict(source)
    if isinstance(source, dict):
        data = apply_overrides(dict(source), items)
        data.setdefault("name", "run")
        return config_from_dict(data, "config")
    return load_config(source, items)


def run(source: ConfigLike, resume: bool = False, overwrite: bool = False, **overrides: Any) -> Path:
    """`tailor run`: base evaluation, fine-tuning, evaluation and comparison. Returns the run folder."""
    from tailor.workflow import run_job

    cfg = config(source, **overrides)
    run_job(cfg, resume=resume, overwrite=overwrite)
    return cfg.run_dir


def train(source: ConfigLike, resume: bool = False, overwrite: bool = False, **overrides: Any) -> Path:
    """`tailor train`: fine-tune only. Returns the run folder (runs/<name>, the best model in model/)."""
    from tailor.workflow import train_job

    cfg = config(source, **overrides)
    train_job(cfg, resume=resume, overwrite=overwrite)
    return cfg.run_dir


def load(run_folder: str | Path):
    """(model, tokenizer) of a run folder or model folder, on this process's device."""
    from tailor.runs import load as open_run

    loaded = open_run(run_folder)
    return loaded.model, loaded.tokenizer


def evaluate(run_folder: str | Path, split: str = "test", data: str | Path | None = None) -> dict:
    """`tailor eval`: the run's metrics on a split of its own data ('test' or 'validation'), or with `data` on
    every record of that file (any file in the task's format, read and checked as training reads data.source)."""
    from tailor.models.load import context_length
    from tailor.precision import use_half
    from tailor.runs import load as open_run
    from tailor.tasks import get_task

    loaded = open_run(run_folder)
    cfg, model, tokenizer = loaded.cfg, loaded.model, loaded.tokenizer
    task = get_task(cfg.task)
    if data is not None:
        cfg, split = task.with_test_data(cfg, str(data), model), "test"
    splits = task.prepare(cfg, tokenizer, context_length(model))
    metrics, _ = task.evaluate(model, tokenizer, splits[split], cfg, use_half(cfg.train.precision), split)
    return metrics


def generate(run_folder: str | Path, prompts: list[str] | list[list[dict]], system: str | None = None,
             **decode: Any) -> list[dict]:
    """`tailor generate`: replies to user messages (strings) or conversations (lists of {role, content}),
    with the run's decoding settings changed by keyword (`max_new_tokens=32, do_sample=True`).
    Each reply is {"text", "tokens", "stopped"}."""
    from tailor.generate.inputs import decode_with_overrides, with_system_prompt
    from tailor.precision import use_half
    from tailor.runs import load as open_run
    from tailor.tasks import dialogue

    loaded = open_run(str(run_folder), names=True)
    settings = decode_with_overrides(loaded.cfg, [f"decode.{k}={json.dumps(v)}" for k, v in decode.items()])
    records = [{"messages": [{"role": "user", "content": p}] if isinstance(p, str) else list(p)} for p in prompts]
    records = with_system_prompt(records, system if system is not None else loaded.cfg.data.system_prompt)
    return dialogue.reply(loaded.model, loaded.tokenizer, [r["messages"] for r in records], settings,
                          use_half(loaded.cfg.train.precision), seed=settings.seed)


def read_config(path: str | Path) -> dict:
    """A config file's settings as a plain mapping (what `config()` accepts)."""
    return read_yaml(path)
