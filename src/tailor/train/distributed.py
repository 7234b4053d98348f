"""Data-parallel training across processes: torchrun (or `accelerate launch`) sets the environment.

    torchrun --nproc_per_node 2 -m tailor.cli train CONFIG

Every process runs the same `tailor train`; `init()` has Accelerate join the process group named by
torchrun's RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT variables (gloo on CPUs, nccl on GPUs; see
tailor.device) and the loop wraps the model with Accelerate (DDP). Without them (a plain `tailor train`)
every helper here is a no-op, so the single-process path is unchanged.

Rules the loop follows: every rank sees the same step's micro-batches and keeps its share of
each one's samples (`shard`), so the global batch is the single-process batch; the loss is divided
by the global supervised-token count (`all_reduce_sum`); only rank 0 (`is_main`) writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from tailor import device as devices
from tailor.device import launched
from tailor.errors import TailorError


def init(device: str = "auto") -> bool:
    """Fix this process's device (train.device) and, if launched with several processes, join the process
    group through Accelerate; True if this call created the group."""
    creates = launched() and not dist.is_initialized()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ] if creates else []
    if missing:
        raise TailorError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set: "
                          "start distributed runs with torchrun or accelerate launch.")
    devices.choose(device)
    return creates


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(*values: float) -> list[float]:
    """Sum numbers over all ranks (one collective for all of them)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=devices.collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def shard(indices: list[int]) -> list[int]:
    """This rank's share of one micro-batch: every world_size-th sample, starting at its rank.

    The micro-batches are length-grouped (sorted within a group), so strided shares have similar
    lengths. A share may be empty when the micro-batch has fewer samples than ranks."""
    return indices[rank() :: world_size()]


def any_rank(flag: bool) -> bool:
    """True if the flag is set on any rank (e.g. stop training)."""
    if not active():
        return flag
    return all_reduce_sum(float(flag))[0] > 0


class LossModule(torch.nn.Module):
    """Wraps the model so DDP sees the task's loss computation as its forward pass."""

    def __init__(self, model: torch.nn.Module, token_stats) -> None:
        super().__init__()
        self.model = model
        self.token_stats = token_stats

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.token_stats(self.model, batch)


def sharded(model: torch.nn.Module) -> bool:
    """True when the model's parameters are sharded by FSDP (see `shard_model`)."""
    return active() and bool(getattr(model, "_tailor_fsdp", False))


def shard_model(model: torch.nn.Module, strategy: str) -> bool:
    """With train.strategy 'fsdp' under torchrun: shard the model in place with FSDP2. Each decoder layer
    (the model's `_no_split_modules`) is one unit whose parameters are all-gathered just for its forward
    and backward; the backbone (embeddings, final norm) is the root unit, which FSDP keeps gathered from
    its forward to the end of backward, so a head tied to the embeddings and called after the backbone
    (tailor.train.loss computes the head only on supervised positions) sees full weights. An untied head
    is its own unit. Must run before the optimizer is built, since sharding replaces the parameters.
    True if it sharded the model."""
    if strategy != "fsdp" or not active():
        return False
    from torch.distributed.fsdp import fully_shard

    from tailor.models.lora import is_lora

    if is_lora(model):
        raise TailorError("train.strategy 'fsdp' does not support LoRA models yet; use train.strategy 'ddp' "
                          "(the base model is frozen, so each process holds it once plus a small adapter).")
    unit_names = set(getattr(model, "_no_split_modules", None) or ())
    units = [m for m in model.modules() if type(m).__name__ in unit_names]
    if not units:
        raise TailorError(f"train.strategy 'fsdp': found no decoder layers to shard in {type(model).__name__} "
                          "(it names no _no_split_modules); use train.strategy 'ddp'.")
    for unit in units:
        fully_shard(unit)
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    root = backbone if isinstance(backbone, torch.nn.Module) else model
    covered = {id(p) for p in root.parameters()}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if root is not model and head is not None:
        embeddings = model.get_input_embeddings()
        tied = any(p is q for p in head.parameters() for q in embeddings.parameters())
        fully_shard([embeddings, head] if tied else head)  # one unit for a head tied to the embeddings
        covered |= {id(p) for p in head.parameters()}
    fully_shard(root)
    if any(id(p) not in covered for p in model.parameters()):  # e.g. a classifier's score layer
        fully_shard(model)
    model._tailor_fsdp = True
    return True


def full_model_state(model: torch.nn.Module) -> dict | None:
    """The whole state dict of an FSDP-sharded model, gathered to CPU on rank 0 (other ranks get an
    empty dict). Every rank must call it (it is a collective); None when the model is not sharded."""
    if not sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # A tied weight (lm_head = embeddings) is stored once, as save_pretrained does for an unsharded model.
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    return {k: v for k, v in full.items() if k not in tied}


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """The optimizer's state keyed by parameter name, gathered to CPU on rank 0 (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: torch.nn.Module, optimizer, weights: dict, optim_state: dict):
    """Load full (unsharded) model and optimizer states into a sharded model: each rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, strict=False)
    missing, unexpected = set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
    return missing, unexpected


def accelerator(device: torch.device):
    """Accelerate's handle on this process (its device, process group and DDP wrapping). Mixed precision stays
    with tailor.device: Accelerate's state fixes it once per process, and a search trains many runs in one."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedDataParallelKwargs

    held = PartialState._shared_state.get("device")
    if held is not None and held.type != device.type and not launched():
        # Accelerate keeps one state per process; a single process may train on the GPU, then on the CPU.
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=device.type == devices.CPU, device_placement=False,
                       kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])


def wrap(model: torch.nn.Module, token_stats, accel) -> torch.nn.Module | None:
    """DDP over the model's loss when running distributed, wrapped by Accelerate (FSDP when `shard_model`
    sharded it); None when single-process."""
    if not active():
        return None
    if sharded(model):  # FSDP2 hooks into the model itself; gradients are reduce-scattered per micro-batch
        return LossModule(model, token_stats)
    return accel.prepare_model(LossModule(model, token_stats), device_placement=False)


def local_batches(parts: list[list[int]], collate) -> tuple[list[dict], list[float]]:
    """This rank's micro-batches for one optimizer step, with weights: 1 for its share of each
    global micro-batch; 0 for a stand-in sample where its share is empty (DDP needs every rank to
    run the same number of backward passes, so the rank computes a loss it then ignores)."""
    shares = [shard(idx) for idx in parts]
    batches = [collate(share or idx[:1]) for share, idx in zip(shares, parts)]
    return batches, [1.0 if share else 0.0 for share in shares]


def sync_grads(accel, ddp, last: bool):
    """Gradients are all-reduced only on the step's last micro-batch (accumulate locally before)."""
    import contextlib

    if ddp is None or last or not hasattr(ddp, "no_sync"):  # FSDP: sharded gradients accumulate as they come
        return contextlib.nullcontext()
    return accel.no_sync(ddp)


def full_value(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a possibly sharded one (FSDP's gradient norm is a DTensor); every rank calls it."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value
