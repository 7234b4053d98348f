"""bf16 autocast where the CPU has native bf16 (AVX512-BF16 / AMX), fp32 otherwise.

Training keeps fp32 master weights under autocast. Inference (scoring, generation) instead runs
on a bf16 copy of the weights: autocast would re-cast every fp32 weight on every forward, which
at batch 1 reads four times the bytes the bf16 weights take.
"""

from __future__ import annotations

import contextlib
import copy

import torch


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(precision: str) -> bool:
    if precision == "auto":
        return cpu_has_bf16()
    return precision == "bf16"


def autocast(enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An inference copy of `model` with bf16 parameters; buffers (e.g. rotary frequencies) keep their dtype.

    Floating parameters are cast straight into the copy (no transient fp32 duplicate), and tied
    parameters stay tied because deepcopy meets the same object twice. requires_grad is kept: the
    copy runs under inference_mode anyway, and torch.matmul picks its kernel by it (with False, the
    LM head on a sliced hidden state went through a batched matmul that copied the whole
    vocabulary matrix per row).
    """
    memo = {id(p): torch.nn.Parameter(p.detach().to(torch.bfloat16) if p.is_floating_point() else p.detach(),
                                      requires_grad=p.requires_grad)
            for p in model.parameters()}
    clone = copy.deepcopy(model, memo)
    return clone.eval()


def inference_model(model: torch.nn.Module, bf16: bool) -> torch.nn.Module:
    """The model to run inference with: a bf16 copy when bf16 is asked for and the weights are fp32."""
    if bf16 and any(p.dtype == torch.float32 for p in model.parameters()):
        return bf16_copy(model)
    return model
