"""What a forward keeps for its backward: the memory levers' tests count it."""

from typing import Callable

import torch


def saved_bytes(forward: Callable[[], object], leave_out=()) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of what `forward()` computes, but for the
    storages of the tensors in `leave_out` (the parameters, which are there anyway)."""
    storages, there = {}, {t.untyped_storage().data_ptr() for t in leave_out}

    def pack(t):
        if t.untyped_storage().data_ptr() not in there:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(storages.values())
