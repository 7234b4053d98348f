"""bf16 autocast where the CPU has native bf16 (AVX512-BF16 / AMX), fp32 otherwise."""

from __future__ import annotations

import contextlib

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
