"""Data-parallel training across processes: torchrun (or `accelerate launch`) sets the environment.

    torchrun --nproc_per_node 2 -m tailor.cli train CONFIG

Every process runs the same `tailor train`; `init()` joins the process group named by torchrun's
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT variables (gloo on CPU, nccl on GPUs). Without them
(a plain `tailor train`) every helper here is a no-op, so the single-process path is unchanged.

Rules the loop follows: every rank sees the same step's micro-batches and keeps its share of
each one's samples (`shard`), so the global batch is the single-process batch; the loss is divided
by the global supervised-token count (`all_reduce_sum`); only rank 0 (`is_main`) writes files.
"""

from __future__ import annotations

import datetime as dt
import os

import torch
import torch.distributed as dist

from tailor.errors import TailorError


def launched() -> bool:
    """True when started by torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> bool:
    """Join the process group if launched with several processes; True if this call created it."""
    if not launched() or dist.is_initialized():
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise TailorError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set: "
                          "start distributed runs with torchrun or accelerate launch.")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=30))
    return True


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
    t = torch.tensor(values, dtype=torch.float64)
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


def wrap(model: torch.nn.Module, token_stats) -> torch.nn.Module | None:
    """DDP over the model's loss when running distributed; None when single-process."""
    if not active():
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(LossModule(model, token_stats), broadcast_buffers=False)


def local_batches(parts: list[list[int]], collate) -> tuple[list[dict], list[float]]:
    """This rank's micro-batches for one optimizer step, with weights: 1 for its share of each
    global micro-batch; 0 for a stand-in sample where its share is empty (DDP needs every rank to
    run the same number of backward passes, so the rank computes a loss it then ignores)."""
    shares = [shard(idx) for idx in parts]
    batches = [collate(share or idx[:1]) for share, idx in zip(shares, parts)]
    return batches, [1.0 if share else 0.0 for share in shares]


def sync_grads(ddp, last: bool):
    """Gradients are all-reduced only on the step's last micro-batch (accumulate locally before)."""
    import contextlib

    return contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
