"""Greedy decoding's argmax on bf16 or fp32 logits (`argmax.cpp`)."""

from __future__ import annotations

import torch

from tailor.kernels.build import available, avx512_available


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits.argmax(-1), the first index on ties: on bf16 rows the kernel's scan (torch's bf16 argmax, or
    a cast to fp32 first, is several times slower on a 49k vocabulary); the same indices either way."""
    if not logits.is_cpu or logits.shape[-1] == 0:
        return logits.float().argmax(-1)
    if logits.dtype == torch.float32 and avx512_available():  # torch's fp32 argmax: about 100 us on a 49k vocabulary
        return torch.ops.tailor_kernels.argmax_f32(logits.reshape(-1, logits.shape[-1]).contiguous()).view(logits.shape[:-1])
    if logits.dtype != torch.bfloat16 or not available():
        return logits.float().argmax(-1)
    flat = logits.reshape(-1, logits.shape[-1]).contiguous()
    return torch.ops.tailor_kernels.argmax_bf16(flat).view(logits.shape[:-1])
