"""`replaced_forwards`: modules that run another forward within a block, their own again after it."""

from __future__ import annotations

import contextlib
import types
from typing import Callable, Iterator

import torch


@contextlib.contextmanager
def replaced_forwards(modules: list[torch.nn.Module], forward: Callable) -> Iterator[bool]:
    """Within the block each module's forward is `forward` (bound to it), an instance attribute deleted on leaving,
    so the class's forward shows through again. Yields whether there was any module."""
    for module in modules:
        module.forward = types.MethodType(forward, module)
    try:
        yield bool(modules)
    finally:
        for module in modules:
            del module.forward
