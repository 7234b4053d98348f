"""RMSNorm in one kernel pass forward and one backward, for training on fp32 activations.

Under autocast the residual stream stays fp32, and transformers' LlamaRMSNorm spends seven torch ops
forward and about ten backward on it, each a full pass over the activations: 3.6 ms forward and
backward at 1808 rows of 576, and a SmolLM2 step runs 61 of them. The kernel (`rms_norm_fp32` in
generate/kernels/dot_bf16.cpp) does it in 0.8 ms, in fp32 throughout; the sums run in another order
than torch's, so results agree to fp32 rounding, not bit for bit (`tests/train/test_fused_norm.py`).

Only training forwards on fp32 input and weights use it; scoring, generation (bf16) and copies of the
model (their own weights) keep the module's own forward.
"""

from __future__ import annotations

import contextlib
import types

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tailor.generate import kernel


class Norm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        out, rstd = torch.ops.tailor_kernels.rms_norm_fp32(x, weight, eps)
        ctx.save_for_backward(x, rstd, weight)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, rstd, weight = ctx.saved_tensors
        dx, dw = torch.ops.tailor_kernels.rms_norm_fp32_backward(grad.float().contiguous(), x, rstd, weight)
        return dx, dw if ctx.needs_input_grad[1] else None, None


def _forward(self: LlamaRMSNorm, x: torch.Tensor) -> torch.Tensor:
    weight = self.weight
    if (torch.is_grad_enabled() and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.shape[-1] == weight.shape[0] and x.shape[-1] % kernel.LANES == 0):
        return Norm.apply(x.reshape(-1, x.shape[-1]).contiguous(), weight, self.variance_epsilon).view(x.shape)
    return LlamaRMSNorm.forward(self, x)


@contextlib.contextmanager
def fused_norms(model: torch.nn.Module, enabled: bool = True):
    """Within the block, the model's LlamaRMSNorm modules train through the kernel (module docstring).
    Yields whether any does."""
    norms = [m for m in model.modules() if type(m) is LlamaRMSNorm] if enabled else []
    if norms and not kernel.available():  # asked only when there is a norm to run: the first call builds the kernel
        norms = []
    for norm in norms:
        norm.forward = types.MethodType(_forward, norm)
    try:
        yield bool(norms)
    finally:
        for norm in norms:
            del norm.forward
