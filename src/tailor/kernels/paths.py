"""`patched`: every CPU speed path that applies to a model, entered together and undone together."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from tailor.kernels.build import available, avx512_available, switched
from tailor.kernels.embedding import sparse_tied_gradient
from tailor.kernels.head import resident_head
from tailor.kernels.linear import lean_projections
from tailor.kernels.matmul import forget_probes
from tailor.kernels.mlp import lean_mlps
from tailor.kernels.norm import fused_norms
from tailor.kernels.rotary import fused_rotary


@contextlib.contextmanager
def patched(model: torch.nn.Module, training: bool, enabled: bool = True, compiled: bool = True,
            optimizer: torch.optim.Optimizer | None = None, half: torch.dtype | None = None) -> Iterator[list[str]]:
    """Within the block, the speed paths that apply to `model` are on; on leaving it every one is undone.
    Yields their names, in the words the training loop prints.

    `enabled` False applies none (training: `train.cpu_fast_paths`, which the loop honours on the CPU in one
    process only; decoding: `decode.kernels`); `compiled` False leaves out the C++ kernels alone
    (`train.kernels`). Where the kernels are off, nothing is built and every op is torch's.

    Training (`optimizer` steps the model's weights, `half` is the autocast dtype or None): RMSNorm (through
    the kernel, or where it cannot run keeping less for its backward) and, under bf16, the rotary embedding
    through the kernels (norm.py, rotary.py); under bf16 the LM head's
    resident bf16 weight and fp32 gradient (head.py); a tied embedding's sparse gradient (embedding.py); gated
    MLPs that keep two of their four wide activations for the backward (mlp.py); under bf16, projections that
    keep one bf16 copy of a shared input and no weight cast, and bf16 weight gradients where `optimizer` has
    `reads_bf16_grads` (linear.py).
    The grouped attention (attention.py) is not among them: `train.loss.token_stats` enters it around each
    teacher-forced forward, as scoring outside training does.

    Decoding: nothing to patch; the decoder calls the kernels (matmul.py, norm.py, argmax.py, rotary.cpp)
    itself, and they stand in for torch's ops where the weights are bf16 (on a CPU without AVX512-BF16, the
    fp32 passes: widen.cpp's product, rotary_f32, argmax_f32, the fp32 norm).
    """
    with switched(enabled and compiled), contextlib.ExitStack() as stack:
        if not training:
            weight = next(model.parameters(), None)
            bf16 = weight is not None and weight.is_cpu and weight.dtype == torch.bfloat16
            if bf16 and available():
                yield ["kernel products, RMSNorm, rotary and argmax"]
            elif bf16 and avx512_available():  # no AVX512-BF16: bf16 weights decode in fp32
                yield ["kernel products, RMSNorm, rotary and argmax in fp32 on bf16 weights"]
            else:
                yield []
            return
        forget_probes()  # decoding's probe weights: not needed while training, which sets the run's peak
        bf16 = enabled and half == torch.bfloat16
        head_on = stack.enter_context(resident_head(model, optimizer, enabled=bf16)) if optimizer is not None \
            else False
        sparse_on = stack.enter_context(sparse_tied_gradient(model, enabled=enabled))
        norm = stack.enter_context(fused_norms(model, enabled=enabled))
        rotary_on = stack.enter_context(fused_rotary(model, enabled=bf16))
        mlp_on = stack.enter_context(lean_mlps(model, enabled=enabled))
        # an optimizer that reads bf16 gradients says so (train/adamw_bf16.py): the projections' stay bf16
        half_grads = bool(getattr(optimizer, "reads_bf16_grads", False))
        projections_on = stack.enter_context(lean_projections(model, enabled=bf16, half_grads=half_grads))
        yield [name for name, on in ((norm, norm), ("kernel rotary", rotary_on),
                                     ("resident bf16 LM head", head_on), ("sparse embedding gradient", sparse_on),
                                     ("lean MLP backward", mlp_on), ("lean bf16 projections", projections_on)) if on]
