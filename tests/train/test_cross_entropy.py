"""The blockwise cross-entropy against torch's log_softmax + nll_loss, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from tailor.train import cross_entropy
from tailor.train.cross_entropy import summed_cross_entropy


def reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss as it ran before: log-softmax in fp32 of the logits, summed NLL."""
    return F.nll_loss(F.log_softmax(logits, -1, dtype=torch.float32), targets, reduction="sum")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("block_values", [1 << 22, 300])  # one block, and blocks of 3 rows with a ragged last one
def test_loss_and_gradient_match_log_softmax(monkeypatch, dtype, block_values):
    monkeypatch.setattr(cross_entropy, "BLOCK_VALUES", block_values)
    gen = torch.Generator().manual_seed(0)
    base = (torch.randn(10, 100, generator=gen) * 4).to(dtype)
    targets = torch.randint(0, 100, (10,), generator=gen)
    ours, theirs = base.clone().requires_grad_(), base.clone().requires_grad_()
    loss = summed_cross_entropy(ours, targets)
    expected = reference(theirs, targets)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-5)
    (loss * 0.37).backward()
    (expected * 0.37).backward()
    assert ours.grad.dtype == dtype
    tol = dict(rtol=1e-2, atol=1e-4) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.grad, theirs.grad, **tol)
    # softmax - one-hot sums to 0 in each row
    torch.testing.assert_close(ours.grad.float().sum(-1), torch.zeros(10), rtol=0, atol=2e-3)


def test_matches_fp64_and_is_differentiable_through_a_graph():
    """The loss of logits made by a product, against float64 cross-entropy: the gradient reaches the inputs."""
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(7, 16, generator=gen, requires_grad=True)
    w = torch.randn(50, 16, generator=gen)
    targets = torch.randint(0, 50, (7,), generator=gen)
    summed_cross_entropy(h @ w.t(), targets).backward()
    h64 = h.detach().double().requires_grad_()
    expected = F.cross_entropy(h64 @ w.double().t(), targets, reduction="sum")
    expected.backward()
    torch.testing.assert_close(h.grad, h64.grad.float(), rtol=1e-4, atol=1e-5)


def test_no_fp32_copy_of_the_logits_is_kept_for_the_backward():
    """What autograd keeps: the logits themselves and one fp32 value a row, not fp32 log-probabilities."""
    logits = torch.randn(64, 1000).to(torch.bfloat16).requires_grad_()
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        summed_cross_entropy(logits, torch.zeros(64, dtype=torch.long))
    assert any(t is logits for t in kept)
    assert sum(t.numel() * t.element_size() for t in kept) <= logits.numel() * 2 + 64 * (4 + 8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_backward_leaves_the_saved_logits_as_they_were(dtype):
    """A second backward through the same graph (retain_graph) gives the same gradient: nothing saved was changed."""
    logits = (torch.randn(5, 40) * 3).to(dtype).requires_grad_()
    loss = summed_cross_entropy(logits * 1, torch.arange(5))  # the saved tensor is the product, not the leaf
    first, = torch.autograd.grad(loss, logits, retain_graph=True)
    second, = torch.autograd.grad(loss, logits)
    assert torch.equal(first, second)


def test_overwrite_writes_the_same_gradient_over_the_logits():
    """The training loss lets the backward write the logits' gradient over the logits (one (n, V) tensor less at
    the backward's start): the same values, in the logits' own storage; a second backward is refused."""
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(9, 16, generator=gen).bfloat16()
    w = torch.randn(70, 16, generator=gen).bfloat16()
    targets = torch.randint(0, 70, (9,), generator=gen)
    grads = {}
    for overwrite in (False, True):
        weight = w.clone().requires_grad_()
        logits = h @ weight.t()
        seen = []
        logits.register_hook(lambda g: seen.append(g.data_ptr()))
        loss = summed_cross_entropy(logits, targets, overwrite=overwrite)
        loss.backward(retain_graph=True)
        grads[overwrite] = weight.grad.clone()
        assert (seen[0] == logits.data_ptr()) == overwrite
    with pytest.raises(RuntimeError, match="second backward|inplace"):  # the logits hold the gradient now
        loss.backward()
    assert torch.equal(grads[True], grads[False])
