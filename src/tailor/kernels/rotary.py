"""The rotary position embedding through `rotary.cpp`, for training: one kernel pass forward and one
backward, bf16 in and out. (Decoding's pass, `rotary_bf16`, turns a step's queries and keys and writes the
cache in one go; generate/lean.py calls it.)

Under autocast the projections give bf16 queries and keys, and transformers' rotary multiplies them
by fp32 cos/sin tables: the rotated queries and keys come out fp32 (five torch ops each, and as many
backward), and every attention product then casts them back to bf16. The kernel (`rotary_train_bf16`)
computes the same fp32 products and sum and rounds once to bf16, so the forward is what the torch ops
and autocast's cast give; its backward takes the gradient in fp32 and rounds once, where autograd
rounds each of the two branches to bf16 and sums them in bf16.

Only for Llama-family attention, training forwards (gradients on) with bf16 queries and fp32 tables;
anything else goes to transformers' own function.
"""

from __future__ import annotations

import contextlib

import torch
from transformers.models.llama import modeling_llama

from tailor.kernels.build import available

ORIGINAL = modeling_llama.apply_rotary_pos_emb


class Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return torch.ops.tailor_kernels.rotary_train_bf16(x, cos, sin, False)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        grad = grad if grad.stride(-1) == 1 else grad.contiguous()
        return torch.ops.tailor_kernels.rotary_train_bf16(grad, cos, sin, True), None, None


def _usable(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int) -> bool:
    return (torch.is_grad_enabled() and unsqueeze_dim == 1 and q.dim() == 4 and k.dim() == 4 and cos.dim() == 3
            and q.dtype == k.dtype == torch.bfloat16 and cos.dtype == sin.dtype == torch.float32
            and cos.shape == sin.shape and cos.shape[1:] == q.shape[2:] == k.shape[2:]
            and cos.shape[0] in (1, q.shape[0]) and q.shape[0] == k.shape[0] and q.shape[-1] % 32 == 0
            and q.stride(-1) == 1 and k.stride(-1) == 1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    if not _usable(q, k, cos, sin, unsqueeze_dim):
        return ORIGINAL(q, k, cos, sin, unsqueeze_dim)
    cos, sin = cos.contiguous(), sin.contiguous()
    return Rotary.apply(q, cos, sin), Rotary.apply(k, cos, sin)


@contextlib.contextmanager
def fused_rotary(model: torch.nn.Module, enabled: bool = True):
    """Within the block, Llama attention's rotary embedding trains through the kernel (module docstring).
    Yields whether it does."""
    if not enabled or not any(isinstance(m, modeling_llama.LlamaAttention) for m in model.modules()) \
            or not available():
        yield False
        return
    before = modeling_llama.apply_rotary_pos_emb
    modeling_llama.apply_rotary_pos_emb = apply_rotary_pos_emb
    try:
        yield True
    finally:
        modeling_llama.apply_rotary_pos_emb = before
