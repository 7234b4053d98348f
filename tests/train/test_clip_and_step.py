"""Clipping inside the fused AdamW step gives clip_grad_norm_ followed by the step."""

import copy

import pytest
import torch

from tailor.train.loop import clip_and_step, make_optimizer


def model_with_grads(seed: int, scale: float) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * scale
    return model


@pytest.mark.parametrize("scale, max_norm", [(10.0, 1.0), (1e-3, 1.0), (10.0, float("inf"))])
def test_the_step_equals_clipping_then_stepping(scale, max_norm):
    ours = model_with_grads(0, scale)
    theirs = copy.deepcopy(ours)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        b.grad = a.grad.clone()  # deepcopy leaves gradients behind
    want_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    optimizer = make_optimizer(theirs, 1e-2, 0.1, [0.9, 0.999])
    optimizer.step()
    mine = make_optimizer(ours, 1e-2, 0.1, [0.9, 0.999])
    got_norm = clip_and_step(ours, mine, max_norm)
    assert float(got_norm) == pytest.approx(float(want_norm), rel=1e-6)
    assert not hasattr(mine, "grad_scale")  # a later step is not scaled by a stale factor
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # The moments saw the clipped gradients: a clipped step and an unclipped one would part here.
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine.state[a]["exp_avg"], optimizer.state[b]["exp_avg"], rtol=1e-5, atol=1e-8)


def test_a_factor_of_one_when_the_norm_is_under_the_limit():
    model = model_with_grads(1, 1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    clip_and_step(model, make_optimizer(model, 1e-2, 0.0, [0.9, 0.999]), 1.0)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # exp_avg = (1 - beta1) * grad exactly: the gradient went in unscaled.
    optimizer = make_optimizer(model, 1e-2, 0.0, [0.9, 0.999])
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    clip_and_step(model, optimizer, 1.0)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(optimizer.state[p]["exp_avg"], 0.1 * g, rtol=1e-6, atol=0)
