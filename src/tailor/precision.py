"""Mixed precision: autocast in the device's half dtype for training, a half copy of the weights for inference.

The `bf16` flags passed through tasks, scoring and generation mean "compute in the device's half
dtype" (`half`): bf16 on CPUs with native bf16 and on GPUs that have it, fp16 on GPUs without bf16
(tailor.device decides). Training keeps fp32 master weights under autocast. Inference (scoring,
generation) instead runs on a half copy of the weights: autocast would re-cast every fp32 weight on
every forward, which at batch 1 reads four times the bytes the bf16 weights take.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from tailor import device as devices


def use_half(precision: str) -> bool:
    """True when train.precision asks for mixed precision on this process's device."""
    return devices.half_dtype(precision) is not None


def half() -> torch.dtype:
    """The half dtype of this process's device: bf16 where it has it, else fp16 (GPUs only)."""
    return devices.half_dtype("auto") or torch.bfloat16


def autocast(enabled: bool) -> contextlib.AbstractContextManager:
    return devices.autocast(half() if enabled else None)


def half_copy(model: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """An inference copy of `model` with half (bf16) parameters on the same device; buffers (e.g. rotary
    frequencies) keep their dtype.

    Floating parameters are cast straight into the copy (no transient fp32 duplicate), and tied
    parameters stay tied because deepcopy meets the same object twice. requires_grad is kept: the
    copy runs under inference_mode anyway, and torch.matmul picks its kernel by it (with False, the
    LM head on a sliced hidden state went through a batched matmul that copied the whole
    vocabulary matrix per row).
    """
    dtype = dtype or half()
    memo = {id(p): torch.nn.Parameter(p.detach().to(dtype) if p.is_floating_point() else p.detach(),
                                      requires_grad=p.requires_grad)
            for p in model.parameters()}
    clone = copy.deepcopy(model, memo)
    return clone.eval()


def inference_model(model: torch.nn.Module, bf16: bool) -> torch.nn.Module:
    """The model to run inference with: a half copy when mixed precision is asked for and the weights are fp32."""
    if bf16 and any(p.dtype == torch.float32 for p in model.parameters()):
        return half_copy(model)
    return model
