"""What a forward keeps for its backward: the memory levers' tests count it."""

from typing import Callable

import torch


def saved_bytes(forward: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of what `forward()` computes."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(storages.values())
