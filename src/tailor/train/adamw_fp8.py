"""train.optimizer adamw_fp8: AdamW with its two moments in 8 bits, 2 bytes a weight instead of adamw_bf16's 4.

Each moment of a weight is kept as one byte a value relative to its block of 256 values' largest magnitude, an
fp32 scale per block (kernels/adamw_fp8.cpp says how the codes are made and why they round to nearest). A
step decodes the moments, updates them and the weight as adamw_bf16 does (train/adamw_bf16.py; the same
`constants`, gradients fp32 or bf16, `grad_scale` dividing them), and stores the new moments' codes.
Weights of fewer than SMALL values (norms, biases) keep adamw_bf16's bf16 moments: they weigh nothing, and a
block of them is where 8 bits would cost the most precision (bitsandbytes and torchao keep such tensors in
32 bits). SmolLM2-135M: AdamW state 1.08 GB (fp32) -> 0.54 GB (bf16) -> 0.27 GB. Where the C++ does not build,
`reference_step` does the same in torch ops, with the same bits.
"""

from __future__ import annotations

import torch

from tailor.train.adamw_bf16 import MASK, AdamWBf16, fast

BLOCK = 256  # values per scale (the C++'s BLOCK)
SMALL = 4096  # weights with fewer values keep bf16 moments
M_LOW, V_LOW = 113, 96  # the codes' smallest biased exponents (the C++'s): 2^-14 and 2^-31 of the block's max


def _float(bits: torch.Tensor) -> torch.Tensor:
    return (bits & MASK).to(torch.uint32).view(torch.float32)


def _rounded(r: torch.Tensor) -> torch.Tensor:
    """Magnitudes in [0, 1] as (biased exponent << 3 | 3 mantissa bits), rounded to nearest (int64)."""
    return ((r.view(torch.int32).to(torch.int64) & MASK) + (1 << 19)) >> 20


def decode_m(codes: torch.Tensor) -> torch.Tensor:
    c = codes.to(torch.int64)
    code = c & 127
    magnitude = torch.where(code > 0, (code + ((M_LOW - 1) << 3)) << 20, 0)
    return _float(((c >> 7) << 31) | magnitude)


def encode_m(x: torch.Tensor, inv_max: torch.Tensor) -> torch.Tensor:
    q = _rounded(x.abs() * inv_max)
    code = torch.where(q >= (M_LOW << 3), q - ((M_LOW - 1) << 3), 0)
    sign = (x.view(torch.int32).to(torch.int64) & MASK) >> 31
    return ((sign << 7) | code).to(torch.uint8)


def decode_v(codes: torch.Tensor) -> torch.Tensor:
    return _float((codes.to(torch.int64) + (V_LOW << 3)) << 20)


def encode_v(x: torch.Tensor, inv_max: torch.Tensor) -> torch.Tensor:
    q = _rounded(x * inv_max)
    return torch.where(q >= (V_LOW << 3), q - (V_LOW << 3), 0).to(torch.uint8)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """x flat, zero-padded to whole blocks, as (blocks, BLOCK)."""
    flat = x.reshape(-1)
    pad = -flat.numel() % BLOCK
    return torch.cat([flat, flat.new_zeros(pad)]).view(-1, BLOCK) if pad else flat.view(-1, BLOCK)


def reference_step(p: torch.Tensor, g: torch.Tensor, mq: torch.Tensor, ms: torch.Tensor, vq: torch.Tensor,
                   vs: torch.Tensor, args: tuple) -> None:
    """adamw_fp8.cpp's update in torch ops, each rounded as the C++ rounds it."""
    b1, c1, b2, c2, decay, neg_step, inv_bc2_sqrt, eps, inv_scale = (torch.tensor(a, dtype=torch.float32) for a in args)
    n = p.numel()
    m_old = (_blocks(decode_m(mq)) * ms[:, None]).reshape(-1)[:n].view_as(p)
    v_old = (_blocks(decode_v(vq)) * vs[:, None]).reshape(-1)[:n].view_as(p)
    gi = g * inv_scale
    mi = b1 * m_old + c1 * gi
    vi = b2 * v_old + c2 * (gi * gi)
    denom = vi.double().sqrt().float() * inv_bc2_sqrt + eps  # correctly rounded, as the C++'s (adamw_bf16.py)
    p.copy_(p.float() * decay + neg_step * (mi / denom))
    m_max, v_max = _blocks(mi).abs().amax(dim=1), _blocks(vi).amax(dim=1)
    ms.copy_(m_max)
    vs.copy_(v_max)
    one = torch.ones((), dtype=torch.float32)
    m_inv = torch.where(m_max > 0, one / m_max, 0.0)
    v_inv = torch.where(v_max > 0, one / v_max, 0.0)
    mq.copy_(encode_m(_blocks(mi), m_inv[:, None]).reshape(-1)[:n].view_as(mq))
    vq.copy_(encode_v(_blocks(vi), v_inv[:, None]).reshape(-1)[:n].view_as(vq))


class AdamWFp8(AdamWBf16):
    """AdamW with 8-bit moments and a scale per 256 values; see the module's docstring."""

    kind = "adamw_fp8"

    def new_moments(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        if p.numel() < SMALL:
            return super().new_moments(p)
        blocks = -(-p.numel() // BLOCK)
        codes = {key: torch.zeros_like(p, dtype=torch.uint8, memory_format=torch.contiguous_format)
                 for key in ("exp_avg", "exp_avg_sq")}
        scales = {f"{key}_scale": torch.zeros(blocks, dtype=torch.float32, device=p.device) for key in codes}
        return {**codes, **scales}

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, args: tuple, noise: int) -> None:
        if "exp_avg_scale" not in state:
            return super().update(p, g, state, args, noise)
        moments = (state["exp_avg"], state["exp_avg_scale"], state["exp_avg_sq"], state["exp_avg_sq_scale"])
        if fast(p):
            torch.ops.tailor_portable.adamw_fp8_(p, g, *moments, *args)
        else:
            reference_step(p, g.float(), *moments, args)

    def moment_dtype(self, state: dict) -> torch.dtype:
        return torch.uint8 if "exp_avg_scale" in state else torch.bfloat16
