"""transformers' LlamaRMSNorm through `norm.cpp`: decoding's bf16 norm bit for bit, and training's fp32 norm
in one pass forward and one backward.

Decoding (`rms_norm`): a step runs 61 norms on a few rows, where each torch op costs more in dispatch
than in arithmetic. The mean square stays torch's (its summation order is its own); the other five ops
run in one pass of the kernel, each rounded as the torch op it stands for.

Training (`fused_norms`): under autocast the residual stream stays fp32, and LlamaRMSNorm spends seven
torch ops forward and about ten backward on it, each a full pass over the activations: 3.6 ms forward
and backward at 1808 rows of 576, and a SmolLM2 step runs 61 of them. The kernel does it in 0.8 ms, in
fp32 throughout; the sums run in another order than torch's, so results agree to fp32 rounding, not bit
for bit (`tests/kernels/test_fused_norm.py`). Only training forwards on fp32 input and weights use it;
scoring, generation (bf16) and copies of the model (their own weights) keep the module's own forward.

Where the kernel cannot run (no AVX-512F, or `train.kernels` off), `LeanNorm` runs the module's own ops
in torch and keeps only the input and the reciprocal root for the backward, which recomputes the normalised
rows: autograd would also keep them, one tensor of the hidden width a norm (4.7 MB at 8 x 256 tokens of
SmolLM2-135M, 288 MB over its 61 norms). The forward is the module's bit for bit; the backward is the
gradient's closed form, to fp32 rounding of autograd's (`tests/kernels/test_lean_norm.py`).
"""

from __future__ import annotations

import contextlib

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tailor.kernels.build import LANES, available, avx512_available
from tailor.kernels.forwards import replaced_forwards


def rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)` for a decoding step: through the kernel for LlamaRMSNorm on bf16, bit for bit; on fp32 rows
    with a bf16 weight (decoding without native bf16) in one pass, to fp32 rounding (the mean's order)."""
    weight = getattr(norm, "weight", None)
    if (type(norm) is LlamaRMSNorm and x.dtype == torch.float32 and x.is_cpu and weight is not None
            and weight.dtype == torch.bfloat16 and x.shape[-1] % LANES == 0 and avx512_available()):
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        return torch.ops.tailor_kernels.rms_norm_fp32(flat, weight.contiguous(), norm.variance_epsilon)[0].view(x.shape)
    if (type(norm) is not LlamaRMSNorm or x.dtype != torch.bfloat16 or not x.is_cpu or weight is None
            or weight.dtype != torch.bfloat16 or x.shape[-1] % LANES or not available()):
        return norm(x)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    variance = flat.float().pow(2).mean(-1)
    return torch.ops.tailor_kernels.rms_scale_bf16(flat, variance, weight, norm.variance_epsilon).view(x.shape)


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


class LeanNorm(torch.autograd.Function):
    """LlamaRMSNorm's fp32 forward ops, keeping x and the reciprocal root (module docstring). The backward is the
    norm's gradient in six elementwise passes where autograd takes eleven through the module's ops:
    with n = x * rstd and g = grad * weight, dx = rstd * (g - n * mean(g * n)) and dweight = sum(grad * n)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, rstd, weight)
        return weight * (x * rstd)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, rstd, weight = ctx.saved_tensors
        normalized = x * rstd
        grad_weight = (grad * normalized).sum_to_size(weight.shape) if ctx.needs_input_grad[1] else None
        grad_normalized = grad * weight
        dot = (grad_normalized * normalized).mean(-1, keepdim=True)
        return torch.addcmul(grad_normalized, normalized, dot, value=-1).mul_(rstd), grad_weight, None


def _forward(self: LlamaRMSNorm, x: torch.Tensor) -> torch.Tensor:
    weight = self.weight
    if (torch.is_grad_enabled() and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.shape[-1] == weight.shape[0]):
        if x.shape[-1] % LANES == 0 and avx512_available():
            return Norm.apply(x.reshape(-1, x.shape[-1]).contiguous(), weight, self.variance_epsilon).view(x.shape)
        return LeanNorm.apply(x, weight, self.variance_epsilon)
    return LlamaRMSNorm.forward(self, x)


@contextlib.contextmanager
def fused_norms(model: torch.nn.Module, enabled: bool = True):
    """Within the block, the model's LlamaRMSNorm modules train through the kernel, or through `LeanNorm` where
    the kernel cannot run (module docstring). Yields the path's name, or None where there is no such norm."""
    norms = [m for m in model.modules() if type(m) is LlamaRMSNorm] if enabled else []
    # Asked only when there is a norm to run (the first call builds the kernels); the fp32 kernel needs AVX-512F alone.
    name = None if not norms else "kernel RMSNorm" if avx512_available() else "lean RMSNorm backward"
    with replaced_forwards(norms, _forward):
        yield name
