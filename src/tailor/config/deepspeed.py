"""train.deepspeed: a DeepSpeed JSON config whose "auto" values are filled from tailor's train settings.

As in Hugging Face's Trainer, tailor's settings win: a key that is absent or "auto" takes tailor's value,
and an explicit value that disagrees with tailor's setting is an error naming both. Reading and checking
the JSON needs no deepspeed import, so a bad file stops at config time, before a run folder exists; the
config then keeps the file's content, so a run folder's config.yaml does not depend on the file.

tailor's train.batch_size is the GLOBAL micro-batch (each process takes its share of it), so
DeepSpeed's per-process micro-batch is train.batch_size / processes.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from tailor.errors import TailorError

AUTO = "auto"
INSTALL = ("pip install --no-deps deepspeed==0.19.8 einops==0.8.2 hjson==3.1.0 msgpack==1.2.4 ninja==1.13.2 "
           "py-cpuinfo==9.0.0 (`make install` does this)")


def read(source: str | dict) -> tuple[dict, str]:
    """The config as a dict, and how to name it in errors."""
    if isinstance(source, dict):
        return copy.deepcopy(source), "train.deepspeed"
    path = Path(source)
    where = f"train.deepspeed ({path})"
    if not path.is_file():
        raise TailorError(f"{where}: the DeepSpeed config file does not exist.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TailorError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    if not isinstance(data, dict):
        raise TailorError(f"{where}: the top level must be a JSON object.")
    return data, where


def _fill(node: dict, key: str, value: Any, setting: str, where: str, dotted: str) -> None:
    """Put tailor's value at node[key] unless an explicit value is there; that one must agree."""
    have = node.get(key, AUTO)
    if have == AUTO:
        node[key] = value
    elif have != value:
        raise TailorError(f"{where}: \"{dotted}\" is {json.dumps(have)} but {setting} is {json.dumps(value)}. "
                          f"Set it to \"auto\" (tailor fills it in) or make the two agree.")


def _autos(node: Any, path: str = "") -> list[str]:
    """Dotted keys still set to "auto"."""
    if node == AUTO:
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _autos(v, f"{path}.{k}" if path else k)]
    return []


def resolve(source: str | dict, train, world_size: int | None, hidden_size: int | None = None) -> dict:
    """The DeepSpeed config to hand to deepspeed.initialize. `train` is the TrainConfig. At config time the
    number of processes and the model are not known yet (world_size and hidden_size None): the per-process
    micro-batch is not checked then, and the bucket sizes DeepSpeed derives from the model may stay "auto"."""
    ds, where = read(source)
    if "scheduler" in ds:
        raise TailorError(f"{where}: remove the \"scheduler\" section; tailor's train.schedule, train.warmup_steps "
                          "and train.warmup_ratio drive the learning rate.")
    explicit_micro = ds.get("train_micro_batch_size_per_gpu", AUTO)
    if world_size is None:
        world_size = 1
    elif explicit_micro != AUTO and explicit_micro * world_size != train.batch_size:
        raise TailorError(f"{where}: \"train_micro_batch_size_per_gpu\" is {explicit_micro} but train.batch_size is "
                          f"{train.batch_size}, the global micro-batch that {world_size} process(es) share. "
                          "Set it to \"auto\" or to train.batch_size / processes.")
    micro = math.ceil(train.batch_size / world_size)
    ds["train_micro_batch_size_per_gpu"] = micro
    _fill(ds, "gradient_accumulation_steps", train.grad_accum, "train.grad_accum", where, "gradient_accumulation_steps")
    _fill(ds, "train_batch_size", train.batch_size * train.grad_accum, "train.batch_size x train.grad_accum",
          where, "train_batch_size")
    # DeepSpeed checks train_batch_size == micro x accumulation x processes; with a batch that does not split
    # evenly the shares differ by one sample, which only DeepSpeed's sample counter sees.
    ds["train_batch_size"] = micro * train.grad_accum * world_size
    _fill(ds, "gradient_clipping", float(train.max_grad_norm), "train.max_grad_norm", where, "gradient_clipping")

    for half in ("bf16", "fp16"):  # tailor's own bf16 is autocast over fp32 weights (train.precision)
        section = ds.get(half)
        if isinstance(section, dict) and section.get("enabled", AUTO) == AUTO:
            section["enabled"] = False
        if isinstance(section, dict) and section["enabled"] is True and train.precision == "fp32":
            raise TailorError(f"{where}: \"{half}.enabled\" is true but train.precision is \"fp32\".")

    if "optimizer" in ds:
        opt = ds["optimizer"]
        if not isinstance(opt, dict) or str(opt.get("type", "")).lower() not in ("adam", "adamw"):
            raise TailorError(f"{where}: \"optimizer.type\" must be \"AdamW\" (or \"Adam\"), tailor's optimizer; "
                              "or leave the section out and tailor's AdamW is used.")
        params = opt.setdefault("params", {})
        _fill(params, "lr", train.learning_rate, "train.learning_rate", where, "optimizer.params.lr")
        _fill(params, "betas", list(train.betas), "train.betas", where, "optimizer.params.betas")
        _fill(params, "weight_decay", train.weight_decay, "train.weight_decay", where, "optimizer.params.weight_decay")
        if params.get("eps") == AUTO:
            params["eps"] = 1e-8  # torch's AdamW default, which tailor's own optimizer uses

    zero = ds.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise TailorError(f"{where}: \"zero_optimization\" must be an object.")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2):
        raise TailorError(f"{where}: \"zero_optimization.stage\" {json.dumps(stage)} is not supported; use 0, 1 or 2 "
                          "(ZeRO stage 3 shards the parameters: use train.strategy fsdp for that).")
    if hidden_size:  # the values Hugging Face's Trainer derives from the model's width
        for key, value in (("reduce_bucket_size", hidden_size * hidden_size),
                           ("stage3_prefetch_bucket_size", int(0.9 * hidden_size * hidden_size)),
                           ("stage3_param_persistence_threshold", 10 * hidden_size)):
            if zero.get(key) == AUTO:
                zero[key] = value
    left = [k for k in _autos(ds) if not (hidden_size is None and k.startswith("zero_optimization."))]
    if left:
        raise TailorError(f"{where}: \"{left[0]}\" is \"auto\" but no tailor setting fills it; give it a value.")
    return ds


def load(train) -> dict:
    """Config-time check for train.strategy deepspeed: the JSON's content, once it is known to resolve."""
    if train.deepspeed is None:
        raise TailorError("train.strategy 'deepspeed' needs train.deepspeed: the path of a DeepSpeed JSON config "
                          "(or an inline mapping), e.g. {\"zero_optimization\": {\"stage\": 2}}.")
    resolve(train.deepspeed, train, None)
    return read(train.deepspeed)[0]
