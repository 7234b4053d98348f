"""Summed cross-entropy of (n, V) logits, computed in fp32 a block of rows at a time.

`F.nll_loss(F.log_softmax(logits, dtype=torch.float32))`, the way the loss ran before, keeps the fp32
log-probabilities (n x V x 4 bytes) for its backward, and that backward makes two more fp32 tensors of the
same size (nll_loss's zero-filled gradient and log_softmax's own) before the cast back to the logits' dtype:
at SmolLM2's vocabulary of 49152 and 512 supervised positions, 96 MB each, on top of the bf16 logits. Here
the forward keeps the logits as they are and one log-sum-exp a row; the backward writes
softmax - one-hot, times the incoming gradient, into a gradient of the logits' dtype (over the logits
themselves with `overwrite`, as the training loss asks: its logits are read no more), widening
`block_rows` rows at a time. The arithmetic is log_softmax's in fp32, so the loss and gradients agree with
the old path to fp32 rounding (tests/train/test_cross_entropy.py); one pass over the vocabulary fewer each
way makes it faster too (BENCHMARKS.md).
"""

from __future__ import annotations

import torch

BLOCK_VALUES = 1 << 22  # fp32 values widened at once (16 MB): a block of rows of the vocabulary


def block_rows(vocab: int) -> int:
    return max(1, BLOCK_VALUES // max(vocab, 1))


class SummedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, overwrite: bool) -> torch.Tensor:
        rows = block_rows(logits.shape[-1])
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], rows):
            lse[start:start + rows] = torch.logsumexp(logits[start:start + rows].float(), -1)
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        ctx.overwrite = overwrite
        return (lse - picked).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        rows = block_rows(logits.shape[-1])
        # With `overwrite` the gradient is written over the saved logits: one (n, V) tensor less at the start of
        # the backward, where a training step's memory peaks. The write bumps their version, so autograd refuses
        # a second backward through the same graph (retain_graph), which would read them.
        out = logits if ctx.overwrite else torch.empty_like(logits)
        for start in range(0, logits.shape[0], rows):
            block = logits[start:start + rows].to(torch.float32, copy=True)  # a copy even of fp32 logits
            block.sub_(lse[start:start + rows, None]).exp_()  # softmax
            block[torch.arange(block.shape[0], device=block.device), targets[start:start + rows]] -= 1
            out[start:start + rows] = block.mul_(grad)
        return out, None, None


def summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """sum over rows of -log softmax(logits)[target], in fp32 whatever the logits' dtype (module docstring).
    Every target must be a class index (no ignored positions: the caller keeps the supervised rows).
    `overwrite`: the backward writes the logits' gradient over the logits, for a caller that reads them no more."""
    return SummedCrossEntropy.apply(logits, targets, overwrite)
