"""train.strategy deepspeed: the model's loss and the optimizer wrapped by `deepspeed.initialize`.

The loop keeps its own batches, loss normalisation, scheduler, logging and evaluation; DeepSpeed takes
the backward pass, the gradient reduction (ZeRO stage 0-2 partitions optimizer state and gradients), the
clipping and the optimizer step. tailor's scheduler drives the learning rate of the optimizer DeepSpeed
steps. Checkpoints hold DeepSpeed's own files (each rank writes its ZeRO shard) under `deepspeed/` next to
tailor's usual ones; see `write_checkpoint`.

On machines without CUDA, DeepSpeed runs on its CPU accelerator over gloo and never compiles an op: tailor's
optimizer is torch's AdamW, a JSON "optimizer" section gets "torch_adam": true unless it says otherwise, and
the shared-memory all-reduce DeepSpeed would JIT-compile is switched off (see `_import`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from tailor import device as devices
from tailor.config import deepspeed as ds_config
from tailor.errors import TailorError
from tailor.fsutil import write_dir, write_json
from tailor.train import distributed

TAG = "deepspeed"  # DeepSpeed's sub-folder in a tailor checkpoint


def _import():
    if devices.is_cpu():
        # Skip DeepSpeed's accelerator probing (and its warning): this is the CPU accelerator.
        os.environ.setdefault("DS_ACCELERATOR", devices.CPU)
    try:
        import deepspeed
    except ImportError as e:
        raise TailorError(f"train.strategy 'deepspeed' needs the deepspeed package ({e}): {ds_config.INSTALL}.") from None
    import logging

    deepspeed.utils.logger.setLevel(logging.WARNING)  # its config dump and per-step info would flood the console
    if devices.is_cpu():
        # When its process group starts, DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce (C++:
        # needs a compiler and half a minute per fresh machine). gloo's all-reduce does the same job, so tell
        # DeepSpeed the op is unavailable (it has no setting for this) and nothing is ever compiled.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def initialize(train, model: torch.nn.Module, token_stats, optimizer: torch.optim.Optimizer, run_dir: Path):
    """(engine, torch optimizer): the engine runs the task's loss as its forward pass; the optimizer returned
    is the one DeepSpeed steps, for tailor's scheduler. `optimizer` is tailor's AdamW, used unless the JSON has
    an "optimizer" section (then DeepSpeed builds one over the same parameter groups)."""
    deepspeed = _import()
    if not dist.is_initialized():
        # One process (no torchrun): DeepSpeed still needs a process group; one of size 1 needs no network.
        # It is left in place, as DeepSpeed keeps its own handle on it for the life of the process.
        dist.init_process_group(devices.backend(), store=dist.HashStore(), rank=0, world_size=1)
        os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed asserts a launcher set it
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    config = ds_config.resolve(train.deepspeed, train, distributed.world_size(), hidden)
    if "optimizer" in config and devices.is_cpu():
        config["optimizer"]["params"].setdefault("torch_adam", True)  # DeepSpeed's fused Adam compiles C++ on CPU
    if distributed.is_main():
        write_json(run_dir / "deepspeed.json", config)  # what DeepSpeed was given, "auto" values filled
    groups = [{k: v for k, v in g.items() if k in ("params", "weight_decay")} for g in optimizer.param_groups]
    client = None if "optimizer" in config else optimizer
    engine, ds_optimizer, _, _ = deepspeed.initialize(
        model=distributed.LossModule(model, token_stats), optimizer=client, model_parameters=groups, config=config)
    # ZeRO and bf16 wrap the torch optimizer (as .optimizer) and step it; its param_groups carry the lr.
    return engine, getattr(ds_optimizer, "optimizer", ds_optimizer)


def backward(engine, loss: torch.Tensor) -> None:
    """One micro-batch. tailor's loss is already divided by the step's token count, so DeepSpeed must not also
    divide it by the accumulation steps; engine.step() updates only on the step's last micro-batch."""
    engine.backward(loss, scale_wrt_gas=False)
    if engine.is_gradient_accumulation_boundary() and not hasattr(engine.optimizer, "_global_grad_norm"):
        # Without ZeRO or bf16 (stage 0, fp32) DeepSpeed keeps no gradient norm; at the boundary the gradients
        # are all-reduced by now and step() has not clipped them yet, so this is the norm it clips by.
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        engine._tailor_grad_norm = float(torch.nn.utils.get_total_norm(grads))
    engine.step()


def grad_norm(engine) -> float:
    """The global gradient norm before clipping, of the optimizer step just taken."""
    norm = engine.get_global_grad_norm()
    return float(getattr(engine, "_tailor_grad_norm", "nan") if norm is None else norm)


def _share(text: str | None) -> str:
    """Rank 0's string, on every rank."""
    if not distributed.active():
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def write_checkpoint(path: Path, engine, fill: Callable[[Path], None]) -> Path:
    """A checkpoint folder built and renamed into place like tailor's others. Every rank must call this:
    rank 0 makes the temporary folder and tells the others its name, every rank writes its DeepSpeed files
    into it, then rank 0 adds tailor's files (`fill`) and renames it."""

    def fill_all(tmp: Path) -> None:
        _share(str(tmp))
        engine.save_checkpoint(str(tmp), tag=TAG, save_latest=False)
        distributed.barrier()  # every rank's shard is on disk before rank 0 renames the folder
        fill(tmp)

    if distributed.is_main():
        return write_dir(path, fill_all)
    engine.save_checkpoint(_share(None), tag=TAG, save_latest=False)
    distributed.barrier()
    return path


def load_checkpoint(path: Path, engine) -> None:
    """Weights and optimizer state (this rank's ZeRO shard) from a checkpoint written by `write_checkpoint`."""
    if not (path / TAG).is_dir():
        raise TailorError(f"checkpoint {path} was not written with train.strategy deepspeed; "
                          "resume it with the train.strategy it was written with.")
    loaded, _ = engine.load_checkpoint(str(path), tag=TAG, load_optimizer_states=True, load_lr_scheduler_states=False)
    if loaded is None:
        raise TailorError(f"checkpoint {path}: DeepSpeed could not load {path / TAG} (a different number of "
                          "processes than the run that wrote it? ZeRO shards are per process).")
