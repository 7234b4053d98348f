"""train.optimizer adamw_bf16: AdamW with its two moments kept in bf16, 4 bytes a weight instead of 8.

Each step widens a tensor's moments to fp32, updates them as torch's AdamW does, updates the weight from
the fp32 values, and stores the moments rounded stochastically to bf16 (kernels/adamw.cpp, one pass per
tensor; why stochastic: see there). The weights stay fp32; a gradient may be fp32 or bf16 (read exactly:
`reads_bf16_grads`, which lets the lean projections keep theirs bf16, kernels/linear.py). SmolLM2-135M: AdamW
state 1.08 -> 0.54 GB. Where the C++ does not build, or the tensors are not on the CPU, `reference_step` does the same in
torch ops (several passes, so slower), with the same bits. Like torch's fused AdamW, the step reads
`grad_scale` (set by the loop's clip_and_step) and divides each gradient by it as it reads it.
"""

from __future__ import annotations

import torch

from tailor import device as devices
from tailor.kernels import build

MASK = 0xFFFFFFFF
MIX = (0x7FEB352D, 0x2C1B3C6D)  # adamw.cpp's mix(): both below 2**31, so int64 products cannot overflow


def mix(x: torch.Tensor | int):
    """adamw.cpp's 32-bit hash, on int64 tensors (values below 2**32) or a Python int."""
    x ^= x >> 16
    x = (x * MIX[0]) & MASK
    x ^= x >> 15
    x = (x * MIX[1]) & MASK
    x ^= x >> 16
    return x


def stream(seed: int, step: int, index: int) -> int:
    """The rounding noise's stream for the `index`-th tensor at `step`: differs per tensor and per step."""
    return mix((mix((step * 0x9E3779B1 + index) & MASK) ^ seed) & MASK)


def round_stochastic(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """fp32 -> bf16 adding `noise` (int64 in [0, 65536)) below the kept bits and truncating: rounds up with
    the probability of the dropped fraction, so the rounded value is right on average."""
    bits = x.view(torch.int32).to(torch.int64) & MASK
    bits = ((bits + noise) >> 16) & 0xFFFF
    return (bits << 16).to(torch.uint32).view(torch.float32).to(torch.bfloat16)  # exact: the low half is zero


def constants(group: dict, step: int, scale: float) -> tuple[float, ...]:
    """The kernel's scalar arguments after the tensors, as doubles (each rounded to fp32 where it is used)."""
    lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    bc1, bc2 = 1 - b1**step, 1 - b2**step
    return b1, 1 - b1, b2, 1 - b2, 1 - lr * wd, -lr / bc1, 1 / bc2**0.5, eps, 1 / scale


def reference_step(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, args: tuple, noise_stream: int):
    """adamw.cpp's update in torch ops, each rounded as the C++ rounds it."""
    b1, c1, b2, c2, decay, neg_step, inv_bc2_sqrt, eps, inv_scale = (torch.tensor(a, dtype=torch.float32) for a in args)
    gi = g * inv_scale
    mi = b1 * m.float() + c1 * gi
    vi = b2 * v.float() + c2 * (gi * gi)
    # torch's fp32 sqrt is vectorised to within half an ulp, not correctly rounded as the C++ one is; a square
    # root in fp64 rounded to fp32 is (fp64 has more than twice fp32's bits).
    denom = vi.double().sqrt().float() * inv_bc2_sqrt + eps
    p.copy_(p.float() * decay + neg_step * (mi / denom))
    flat = torch.arange(p.numel(), device=p.device, dtype=torch.int64).view_as(p)
    r = mix(flat ^ noise_stream)
    m.copy_(round_stochastic(mi, r & 0xFFFF))
    v.copy_(round_stochastic(vi, r >> 16))


def fast(p: torch.Tensor) -> bool:
    """Whether the C++ step (kernels/adamw.cpp, adamw_fp8.cpp) takes this weight."""
    return devices.is_cpu(p.device) and p.dtype == torch.float32 and p.is_contiguous() and build.portable_built()


class AdamWBf16(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments) with bf16 moments; see the module's docstring."""

    kind = "adamw_bf16"  # train.optimizer's name for it
    reads_bf16_grads = True  # kernels.patched: the lean projections may leave their gradients bf16

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 seed: int = 0):
        # "fused": the loop's clip_and_step then passes the clipping factor as grad_scale, as to torch's fused AdamW
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=True))
        self.seed = seed & MASK

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale = getattr(self, "grad_scale", None)
        scale = 1.0 if scale is None else float(scale)
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                index += 1  # the tensor's place in the optimizer: the same after a resume
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"train.optimizer {self.kind} takes dense gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state.update(self.new_moments(p))
                state["step"] += 1
                step = int(state["step"].item())
                self.update(p, p.grad.contiguous(), state, constants(group, step, scale), stream(self.seed, step, index))
        return loss

    def new_moments(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """A weight's moments before its first step: zeros."""
        return {key: torch.zeros_like(p, dtype=torch.bfloat16, memory_format=torch.contiguous_format)
                for key in ("exp_avg", "exp_avg_sq")}

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, args: tuple, noise: int) -> None:
        """One weight's step: `args` from `constants`, `noise` the rounding's stream (`stream`)."""
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if fast(p):
            torch.ops.tailor_portable.adamw_bf16_(p, g, m, v, *args, noise)
        else:
            reference_step(p, g.float(), m, v, args, noise)

    def moment_dtype(self, state: dict) -> torch.dtype:
        return torch.bfloat16

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts a loaded state's tensors to the weight's dtype (fp32): the moments go back to their own
        dtype (exactly: they were bf16 values, or uint8 codes)."""
        super().load_state_dict(state_dict)
        for state in self.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key] = state[key].to(self.moment_dtype(state))
