"""The LM head's bf16 weight and fp32 gradient in buffers that live through the training run.

Under autocast each step casts the head's fp32 weight to a new bf16 copy, casts its bf16 gradient
back to a new fp32 tensor, and sums that with the tied embedding's part into yet another: for
SmolLM2 four passes over 49152 x 576 values a step, 15% of a training step on 2 cores
(BENCHMARKS.md). Here the bf16 copy is refreshed in place after each optimizer step, and the
gradient goes straight into the parameter's `.grad` (a buffer kept between steps) instead of back
through autograd; the tied embedding's sparse rows are then added into it in place. The arithmetic
is autocast's: a bf16 product and its gradient cast to fp32; where a batch's supervised positions
take several head chunks, their parts are summed in fp32 (autocast sums them in bf16 before its
one cast).

Only for one process (DDP and FSDP reduce what autograd hands the parameter, so `train` turns this
on only when nothing wraps the model), under bf16 autocast, for a bias-free nn.Linear head.
"""

from __future__ import annotations

import contextlib

import torch

_ATTRIBUTE = "_tailor_resident"
# Vocabulary rows of the head's weight gradient made at once: products of (ROWS, H), not one bf16 (V, H) beside
# the fp32 gradient (SmolLM2: 9 MiB instead of 54, at the backward's start, where a step's memory peaks).
ROWS = 8192


class Resident:
    def __init__(self, weight: torch.nn.Parameter):
        self.weight = weight
        self.copy: torch.Tensor | None = None  # made on first use: a task may never call the head this way
        self.grad: torch.Tensor | None = None
        self.fresh = False  # whether the copy holds the weight as it is now

    def bf16(self) -> torch.Tensor:
        if self.copy is None:
            self.copy = torch.empty_like(self.weight, dtype=torch.bfloat16)
            self.grad = torch.empty_like(self.weight)
        if not self.fresh:
            with torch.no_grad():
                self.copy.copy_(self.weight)
            self.fresh = True
        return self.copy

    def accumulate(self, grad: torch.Tensor, h: torch.Tensor) -> None:
        """Add the bf16 product grad.t() @ h ((N, V) and (N, H)) into the weight's fp32 `.grad`, ROWS rows of
        the vocabulary at a time."""
        weight = self.weight
        first = weight.grad is None
        if first:
            weight.grad = self.grad
        for start in range(0, weight.shape[0], ROWS):
            part = grad[:, start:start + ROWS].t() @ h
            target = weight.grad[start:start + ROWS]
            target.copy_(part) if first else target.add_(part)


class HeadProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, resident: Resident) -> torch.Tensor:
        ctx.resident = resident
        ctx.save_for_backward(h)
        return h @ resident.bf16().t()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (h,) = ctx.saved_tensors
        resident = ctx.resident
        grad = grad.to(torch.bfloat16)
        resident.accumulate(grad, h)
        return grad @ resident.copy, None


def head_logits(head: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The head's logits for hidden states `h` (N, H): through the resident buffers when they are on."""
    resident = getattr(head, _ATTRIBUTE, None)
    if resident is None or not torch.is_grad_enabled():
        return head(h)
    return HeadProduct.apply(h.to(torch.bfloat16), resident)


def output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrapper
    get = getattr(inner, "get_output_embeddings", None)
    return get() if get is not None else None


@contextlib.contextmanager
def resident_head(model: torch.nn.Module, optimizer: torch.optim.Optimizer, enabled: bool = True):
    """Within the block, training passes through `head_logits` use the resident buffers; each step of
    `optimizer` marks the copy stale (a fused step changes the weight without bumping its version).
    Yields whether it applies."""
    head = output_head(model) if enabled else None
    if not (type(head) is torch.nn.Linear and head.bias is None and head.weight.dtype == torch.float32
            and head.weight.requires_grad):
        yield False
        return
    resident = Resident(head.weight)
    hook = optimizer.register_step_post_hook(lambda *args: setattr(resident, "fresh", False))
    setattr(head, _ATTRIBUTE, resident)
    try:
        yield True
    finally:
        hook.remove()
        delattr(head, _ATTRIBUTE)
