"""Projections under bf16 autocast that keep one bf16 copy of their input and none of their weight.

Under autocast every nn.Linear casts its fp32 input and weight to bf16 and its product keeps both casts
for the backward. In a decoder layer q, k and v read the same normalised input, and so do gate and up:
each casts it again and keeps its own copy, five copies of the hidden width a layer where two would do.
And the bf16 copies of the weights live until the backward has used them (159 MB over SmolLM2-135M's
projections). In SmolLM2-135M training at 4 x 256 tokens the products kept 409 MB for the backward, and
with this path 156 MB (`benchmarks/saved_tensors.py 4 256` on a CPU with native bf16).

Here a projection casts its input once for every projection reading the same tensor (the last input is
remembered with its version, so an input changed in place is cast again), keeps that copy and the fp32
weight, and casts the weight again in the backward (one more cast a weight a pass, against the products
it feeds). The products and casts are autocast's own, so the forward is the module's bit for bit, and
the input's gradient comes back in the input's dtype from each projection and adds up in fp32 as the
casts' gradients did (`tests/kernels/test_lean_linear.py`).

Only plain nn.Linear modules without bias whose fp32 weight trains, but the LM head (its own path, head.py);
anything else keeps its own forward.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from tailor.kernels.forwards import replaced_forwards


class CastLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cast: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # `cast` is x in bf16, made once for every projection of x and not differentiated itself: x is.
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(cast, weight.to(cast.dtype))
        ctx.save_for_backward(cast, weight)
        ctx.x_dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cast, weight = ctx.saved_tensors
        need_x, _, need_weight = ctx.needs_input_grad
        flat = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = None
        if need_x:
            grad_x = flat.mm(weight.to(grad.dtype)).view(*grad.shape[:-1], weight.shape[1]).to(ctx.x_dtype)
        if need_weight:
            grad_weight = flat.t().mm(cast.reshape(-1, cast.shape[-1])).to(weight.dtype)
        return grad_x, None, grad_weight


class _Shared:
    """The last input cast, for the projections that read the same tensor."""

    def __init__(self):
        self.source: torch.Tensor | None = None
        self.version = -1
        self.cast: torch.Tensor | None = None

    def cast_of(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.source is not x or self.version != x._version or self.cast.dtype != dtype:
            self.source, self.version = x, x._version
            self.cast = x.detach().to(dtype)
        return self.cast


def _forward_with(shared: _Shared):
    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        half = torch.get_autocast_dtype(device)
        if (torch.is_grad_enabled() and torch.is_autocast_enabled(device) and x.dtype in (torch.float32, half)
                and self.weight.dtype == torch.float32):
            return CastLinear.apply(x, shared.cast_of(x, half), self.weight)  # a bf16 x is its own cast
        return F.linear(x, self.weight, self.bias)
    return forward


def lean_projections_of(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """The projections this path runs: plain nn.Linear, no bias, a trainable fp32 weight, not the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [m for m in model.modules() if type(m) is torch.nn.Linear and m.bias is None and m is not head
            and m.weight.requires_grad and m.weight.dtype == torch.float32]


@contextlib.contextmanager
def lean_projections(model: torch.nn.Module, enabled: bool = True):
    """Within the block, the model's projections keep one bf16 copy of a shared input and no weight cast
    (module docstring) when they run under autocast. Yields whether any does."""
    shared = _Shared()
    try:
        with replaced_forwards(lean_projections_of(model) if enabled else [], _forward_with(shared)) as on:
            yield on
    finally:
        shared.source = shared.cast = None
