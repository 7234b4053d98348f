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

bf16 gradients (`half_grads`, for an optimizer that reads them: train/adamw_bf16.py). A weight's gradient
is a bf16 product, which autograd casts to fp32 and keeps as the fp32 `.grad`: twice the bytes for the
same values (SmolLM2-135M's projections: 405 MiB). With `half_grads` the backward puts the product itself
in `.grad` (the weight's `grad_dtype` set to None, which lets a gradient differ from its weight's dtype).
A pass's products add into it in bf16 (a shared prefix's run and the batch's: rounded once, as one product of
the pass's rows would be). A later pass (`end_pass()`, which the loop calls after each backward) adds its
product to it in fp32, as autograd's fp32 `.grad` would, one weight at a time as the backward reaches it:
passes and micro-batches sum in fp32 as before, and a step of two passes holds 202 MiB of the first pass's
gradients beside the second's activations instead of 405.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from tailor.kernels.forwards import replaced_forwards


_HALF = "_tailor_half_grads"  # set on a weight while `half_gradients` holds it
_PASS = "_tailor_grad_pass"  # the pass whose backward made a held weight's bf16 gradient
_passes = [0]  # passes ended (`end_pass`)


def end_pass() -> None:
    """The training loop calls it after each pass's backward: a later pass's gradient then adds to the bf16
    ones held so far in fp32, not into them."""
    _passes[0] += 1


def weight_gradient(weight: torch.Tensor, grad: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor | None:
    """What a backward returns for `weight` from the 2-D `grad` of its output and its `inputs`: their product
    cast to the weight's dtype, as autograd keeps it; or, for a weight under `half_gradients` and bf16
    operands, None after adding the bf16 product into `.grad` by hand (the module's docstring). Within one
    pass (a shared prefix's backbone run and the batch's feed the same weights) the products add into the
    bf16 gradient, rounded once as one product of all the pass's rows would be; a later pass widens it and
    adds in fp32."""
    if grad.dtype != torch.bfloat16 or inputs.dtype != torch.bfloat16 or not getattr(weight, _HALF, False):
        return grad.t().mm(inputs).to(weight.dtype)
    held = weight.grad
    if held is None:
        weight.grad = grad.t().mm(inputs)
        setattr(weight, _PASS, _passes[0])
    elif held.dtype == weight.dtype:
        held.add_(grad.t().mm(inputs))
    elif getattr(weight, _PASS, None) == _passes[0]:
        held.addmm_(grad.t(), inputs)
    else:
        weight.grad = None  # the bf16 one goes as its fp32 sum comes
        weight.grad = held.to(weight.dtype).add_(grad.t().mm(inputs))
    return None


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
            grad_weight = weight_gradient(weight, flat, cast.reshape(-1, cast.shape[-1]))
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
def half_gradients(weights: list[torch.Tensor]):
    """Within the block the weights may hold a gradient of another dtype (their `grad_dtype` None); on leaving
    it, a bf16 gradient left is widened and each `grad_dtype` is what it was."""
    before = [w.grad_dtype for w in weights]
    for w in weights:
        w.grad_dtype = None
        setattr(w, _HALF, True)
    try:
        yield
    finally:
        for w, dtype in zip(weights, before):
            delattr(w, _HALF)
            if hasattr(w, _PASS):
                delattr(w, _PASS)
            if w.grad is not None and w.grad.dtype != w.dtype:
                w.grad = w.grad.to(w.dtype)
            w.grad_dtype = dtype


def takes_half_grads() -> bool:
    """Whether this torch lets a gradient's dtype differ from its weight's (Tensor.grad_dtype; the pinned 2.13 does)."""
    return hasattr(torch.Tensor, "grad_dtype")


@contextlib.contextmanager
def lean_projections(model: torch.nn.Module, enabled: bool = True, half_grads: bool = False):
    """Within the block, the model's projections keep one bf16 copy of a shared input and no weight cast
    (module docstring) when they run under autocast; with `half_grads` (for an optimizer that reads bf16
    gradients) their weights' gradients stay the bf16 products they are (down projections under lean_mlps
    too). Yields whether any projection is lean."""
    shared = _Shared()
    modules = lean_projections_of(model) if enabled else []
    half_grads = half_grads and bool(modules) and takes_half_grads()
    try:
        with half_gradients([m.weight for m in modules] if half_grads else []), \
                replaced_forwards(modules, _forward_with(shared)) as on:
            yield on
    finally:
        shared.source = shared.cast = None
