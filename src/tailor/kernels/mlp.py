"""The gated MLP's backward from the gate and up projections alone: two of its four wide activations.

A gated MLP (Llama, Qwen2/3, Mistral, Gemma) computes down(act(gate(x)) * up(x)). Autograd keeps four
tensors of the intermediate width for its backward: gate(x) for act's backward, act(gate(x)) and up(x) for
the product's, and the product itself for down's weight gradient. In SmolLM2-135M training that is 24 KB
a token a layer (1.4 GB at batch 8 x 256 tokens), the largest share of the activations. Here the MLP keeps
only gate(x) and up(x) and recomputes act and the product in the backward: two elementwise passes a layer,
against three products forward and six backward. The products and their dtypes are those of the
module's own forward (under autocast: bf16 products, the fp32 weight's gradient from the cast), so the
gradients are the same to rounding (`tests/kernels/test_lean_mlp.py`).

Only where down is a plain nn.Linear without bias (a LoRA-wrapped or quantized down keeps the module's
own forward); gate and up run as they are, whatever wraps them.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from tailor.kernels.forwards import replaced_forwards
from tailor.kernels.linear import weight_gradient

# The gated MLPs whose forward is exactly down(act(gate(x)) * up(x)) (transformers 5.x); any other
# module keeps its own forward.
GATED = {"LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP", "GemmaMLP", "Gemma2MLP"}


class GatedDown(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, act) -> torch.Tensor:
        # Runs under the caller's autocast, as the module's down(...) would: the same cast of the weight.
        out = F.linear(act(gate) * up, weight)
        ctx.save_for_backward(gate, up, weight)
        ctx.act = act
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up, weight = ctx.saved_tensors
        need_gate, need_up, need_weight = ctx.needs_input_grad[:3]
        with torch.enable_grad():
            g = gate.detach().requires_grad_(need_gate)
            u = up.detach().requires_grad_(need_up)
            hidden = ctx.act(g) * u
        flat = grad.reshape(-1, grad.shape[-1])
        # grad is in the dtype down's product ran in (bf16 under autocast); the weight is cast as autocast cast it.
        grad_weight = None
        if need_weight:
            grad_weight = weight_gradient(weight, flat, hidden.detach().reshape(-1, hidden.shape[-1]).to(grad.dtype))
        grad_gate = grad_up = None
        if need_gate or need_up:
            grad_hidden = flat.mm(weight.to(grad.dtype)).view(hidden.shape).to(hidden.dtype)
            wanted = [t for t, need in ((g, need_gate), (u, need_up)) if need]
            grads = iter(torch.autograd.grad(hidden, wanted, grad_hidden))
            grad_gate = next(grads) if need_gate else None
            grad_up = next(grads) if need_up else None
        return grad_gate, grad_up, grad_weight, None


def _forward(self, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad or self.down_proj.weight.requires_grad):
        return GatedDown.apply(gate, up, self.down_proj.weight, self.act_fn)
    return self.down_proj(self.act_fn(gate) * up)


def gated_mlps(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's gated MLPs this path can run: a known class whose down projection is a plain Linear, no bias."""
    return [m for m in model.modules() if type(m).__name__ in GATED
            and type(m.down_proj) is torch.nn.Linear and m.down_proj.bias is None]


@contextlib.contextmanager
def lean_mlps(model: torch.nn.Module, enabled: bool = True):
    """Within the block, the model's gated MLPs keep two wide activations instead of four (module docstring).
    Yields whether any does."""
    with replaced_forwards(gated_mlps(model) if enabled else [], _forward) as on:
        yield on
