"""Resumable checkpoints and the exported model folder, all written atomically.

runs/<name>/checkpoints/step-000100/   model (safetensors), optimizer.pt, scheduler.pt, rng.pt, state.json
runs/<name>/checkpoints/latest         text file naming the newest complete checkpoint
runs/<name>/model/                     the best model: a plain Hugging Face folder plus tailor.yaml

A checkpoint folder is built under a temporary name and renamed into place; `latest` is
replaced only after that, so a crash at any moment leaves the previous checkpoint usable.
With train.strategy deepspeed the optimizer state is DeepSpeed's own (sub-folder deepspeed/, one ZeRO
shard per process) instead of optimizer.pt; the rest is the same.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from tailor import device as devices
from tailor.errors import TailorError
from tailor.train import deepspeed_engine, distributed
from tailor.fsutil import recover, write_dir, write_json, write_text
from tailor.models.lora import is_lora, load_adapter_state, merged_copy


def save_model_folder(path: Path, model, tokenizer, config_yaml: str, metrics: dict | None = None) -> None:
    """A folder `AutoModelForCausalLM.from_pretrained` loads, carrying the run's config and template.

    A LoRA model is saved twice: its adapter to the sibling folder adapter/ (peft's format), and
    merged into the base weights here, so model/ stays a plain Hugging Face folder.

    An FSDP-sharded model is gathered first: every rank must call this, and rank 0 alone writes."""
    full = distributed.full_model_state(model)  # None unless sharded by FSDP
    if full is not None and not distributed.is_main():
        return
    if is_lora(model):
        adapter = model

        def fill_adapter(tmp: Path) -> None:
            adapter.save_pretrained(tmp)
            write_text(tmp / "tailor.yaml", config_yaml)

        write_dir(path.with_name("adapter"), fill_adapter)
        model = merged_copy(model)

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=full)
        tokenizer.save_pretrained(tmp)
        write_text(tmp / "tailor.yaml", config_yaml)
        if metrics is not None:
            write_json(tmp / "metrics.json", metrics)

    write_dir(path, fill)


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, optimizer, scheduler, state: dict, config_yaml: str,
                    keep: int = 1, engine=None) -> Path:
    """Rank 0 writes; with an FSDP-sharded model every rank must call this (the states are gathered first)
    and the optimizer state is saved keyed by parameter name. With a DeepSpeed `engine` every rank must call
    it too: each writes its own part of DeepSpeed's checkpoint."""
    root = run_dir / "checkpoints"
    name = f"step-{step:06d}"
    full = distributed.full_model_state(model)  # None unless sharded by FSDP
    if engine is not None:
        optim_state = None
    else:
        optim_state = optimizer.state_dict() if full is None else distributed.full_optimizer_state(model, optimizer)
    if full is not None and not distributed.is_main():
        return root / name

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=full)
        tokenizer.save_pretrained(tmp)
        write_text(tmp / "tailor.yaml", config_yaml)
        if optim_state is not None:
            torch.save(optim_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"torch": torch.get_rng_state(), "python": python_rng_state(), **devices.rng_state()}, tmp / "rng.pt")
        write_json(tmp / "state.json", {**state, "step": step})

    if engine is not None:
        path = deepspeed_engine.write_checkpoint(root / name, engine, fill)
        if not distributed.is_main():
            return path
    else:
        path = write_dir(root / name, fill)
    write_text(root / "latest", name + "\n")
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def python_rng_state() -> dict:
    """Python's random state as plain ints and a tensor, so rng.pt loads with torch.load(weights_only=True)."""
    version, internal, gauss = random.getstate()
    return {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def set_python_rng_state(saved) -> None:
    if isinstance(saved, dict):
        random.setstate((saved["version"], tuple(int(x) for x in saved["state"].tolist()), saved["gauss"]))
    else:  # written by an older tailor: random.getstate()'s own tuple
        random.setstate(saved)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names; if that one is missing or incomplete, the newest complete one."""
    root = run_dir / "checkpoints"
    recover(root)  # a checkpoint folder moved aside by a killed writer comes back; its temporary folders go
    pointer = root / "latest"
    complete = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / "state.json").is_file():
            return path
        if not complete:
            raise TailorError(f"{pointer} names {path.name}, which is incomplete or missing, and no other "
                              "complete checkpoint is left.")
        print(f"{pointer} names {path.name}, which is incomplete or missing; resuming from {complete[-1].name}")
    return complete[-1] if complete else None


def load_checkpoint(path: Path, model, optimizer, scheduler, engine=None) -> dict:
    if engine is not None:  # DeepSpeed restores the weights and its optimizer state itself
        deepspeed_engine.load_checkpoint(path, engine)
    else:
        _load_weights_and_optimizer(path, model, optimizer)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)  # tensors and ints only: nothing to unpickle
    torch.set_rng_state(rng["torch"])
    set_python_rng_state(rng["python"])
    devices.set_rng_state(rng)  # the GPU's generator (dropout on the device), where the run has one
    return json.loads((path / "state.json").read_text())


def _load_weights_and_optimizer(path: Path, model, optimizer) -> None:
    if (path / deepspeed_engine.TAG).is_dir():
        raise TailorError(f"checkpoint {path} was written with train.strategy deepspeed; resume it with the same "
                          "train.strategy.")
    weights = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(load_file(f))
    optim_state = torch.load(path / "optimizer.pt", weights_only=True)
    by_name = all(isinstance(k, str) for k in optim_state.get("state", {}))  # FSDP checkpoints key by name
    if by_name != distributed.sharded(model) and optim_state.get("state"):
        raise TailorError(f"checkpoint {path} was written with train.strategy {'fsdp' if by_name else 'ddp'} "
                          "(or in one process); resume it with the same train.strategy.")
    if distributed.sharded(model):
        missing, unexpected = distributed.load_full_state(model, optimizer, weights, optim_state)
        missing = [k for k in missing if "lm_head" not in k]
        if missing or unexpected:
            raise TailorError(f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}).")
    elif is_lora(model):  # the checkpoint holds the adapter (and saved head) only, in peft's naming
        load_adapter_state(model, weights)
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        # Tied weights (lm_head = embeddings) are stored once; anything else missing is a real mismatch.
        missing = [k for k in missing if k not in getattr(model, "_tied_weights_keys", {}) and "lm_head" not in k]
        if missing or unexpected:
            raise TailorError(f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}).")
    if not distributed.sharded(model):
        optimizer.load_state_dict(optim_state)
