"""train.optimizer adamw_bf16: AdamW with bf16 moments rounded stochastically. The C++ step equals its torch
reference bit for bit; the first step is torch's AdamW's; rounding keeps the small changes round-to-nearest
would lose; training follows AdamW closely and a checkpoint resumes exactly."""

import pytest
import torch

from conftest import read_jsonl
from tailor.config import load_config
from tailor.kernels import build
from tailor.train import adamw_bf16
from tailor.train.adamw_bf16 import AdamWBf16
from tailor.workflow import train_job

TRAIN = {"max_steps": 6, "eval_every": 0, "save_every": 3, "warmup_steps": 0, "schedule": "constant"}


def tensors(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    p, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen) * 0.1
    m = (torch.randn(n, generator=gen) * 0.01).bfloat16()
    v = (torch.rand(n, generator=gen) * 1e-3).bfloat16()
    return p, g, m, v


def test_the_kernel_is_its_reference_bit_for_bit():
    assert build.portable_built(), "the optimizer step did not build (see the warning above)"
    n = 3 * 65536 + 77  # several threads' chunks and a ragged end: the noise must not depend on either
    for step, scale, decay in ((1, 1.0, 0.1), (7, 2.5, 0.0), (300, 0.75, 0.01)):
        group = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": decay}
        args, noise = adamw_bf16.constants(group, step, scale), adamw_bf16.stream(5, step, 3)
        ours, ref = tensors(n, step), tensors(n, step)
        torch.ops.tailor_portable.adamw_bf16_(*ours, *args, noise)
        adamw_bf16.reference_step(*ref, args, noise)
        for a, b in zip(ours, ref):
            assert torch.equal(a, b)
        assert not torch.equal(ours[0], tensors(n, step)[0])  # the weights moved


@pytest.mark.parametrize("kernel", [True, False])
def test_steps_follow_torch_adamw(kernel, monkeypatch):
    """The first step uses the exact moments, so it is torch's AdamW's; later ones differ by the moments' rounding."""
    if not kernel:
        monkeypatch.setattr(build, "portable_built", lambda: False)
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(64, 300, generator=gen)
    grads = [torch.randn(64, 300, generator=gen) for _ in range(20)]
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    mine = AdamWBf16([ours], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    torch_adamw = torch.optim.AdamW([theirs], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for n, g in enumerate(grads):
        ours.grad, theirs.grad = g.clone(), g.clone()
        mine.step()
        torch_adamw.step()
        if n == 0:
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    state, exact = mine.state[ours], torch_adamw.state[theirs]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16
    relative = (state["exp_avg_sq"].float() - exact["exp_avg_sq"]) / exact["exp_avg_sq"]
    # each step's rounding is under 0.8% (a bf16 step) and the errors average out: small, and unbiased
    assert relative.abs().max() < 0.1 and relative.abs().mean() < 0.01 and abs(relative.mean()) < 0.002
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-3)  # 20 steps of 1e-2: the rounding stays small
    assert not torch.equal(ours, theirs)


def test_stochastic_rounding_keeps_changes_below_half_a_bf16_step():
    """No gradient for 200 steps: the second moment decays by 0.999 a step, a change round-to-nearest loses
    (0.999 rounds to 1.0 in bf16); rounded stochastically it decays as in fp32, on average."""
    n = 100_000
    p = torch.nn.Parameter(torch.zeros(n))
    opt = AdamWBf16([p], lr=1e-3)
    p.grad = torch.zeros(n)
    opt.step()  # makes the state
    opt.state[p]["exp_avg_sq"].fill_(1.0)
    for _ in range(200):
        opt.step()
    assert torch.tensor(0.999).bfloat16().item() == 1.0
    mean = opt.state[p]["exp_avg_sq"].float().mean().item()
    assert mean == pytest.approx(0.999**200, rel=2e-3)


def test_the_clipping_factor_divides_the_gradients():
    gen = torch.Generator().manual_seed(2)
    start, g = torch.randn(1000, generator=gen), torch.randn(1000, generator=gen)
    a, b = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    first, second = AdamWBf16([a], lr=1e-2, weight_decay=0.1), AdamWBf16([b], lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        a.grad, b.grad = g.clone(), g / 4
        first.grad_scale = torch.tensor(4.0)  # as the loop's clip_and_step sets it
        first.step()
        del first.grad_scale
        second.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "log.jsonl") if r["split"] == "train"]


def test_training_follows_adamw_and_resumes_exactly(tiny_config):
    runs = {}
    for name in ("adamw", "adamw_bf16"):
        cfg = load_config(tiny_config(name=name, train={**TRAIN, "optimizer": name}))
        train_job(cfg)
        runs[name] = cfg.run_dir
    base, half = losses(runs["adamw"]), losses(runs["adamw_bf16"])
    assert len(half) == 6 and half[-1] < half[0]
    assert half == pytest.approx(base, rel=0.02)
    assert half != base  # the moments are rounded: not the same optimizer under another name
    state = torch.load(runs["adamw_bf16"] / "checkpoints" / "step-000006" / "optimizer.pt", weights_only=True)["state"]
    assert {s["exp_avg"].dtype for s in state.values()} == {torch.bfloat16}
    path = tiny_config(name="bf16", train={**TRAIN, "optimizer": "adamw_bf16"})
    interrupted = load_config(path, ["name=resumed", "train.max_steps=3"])
    train_job(interrupted)
    train_job(load_config(path, ["name=resumed"]), resume=True)
    assert losses(interrupted.run_dir) == half  # bit for bit: the rounding noise is keyed by step and tensor


def test_a_bf16_gradient_is_read_exactly():
    """The lean projections leave bf16 gradients (kernels/linear.py): the step is the one on the same values in fp32."""
    n = 2 * 65536 + 5
    group = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}
    args, noise = adamw_bf16.constants(group, 4, 1.5), adamw_bf16.stream(2, 4, 1)
    p, g, m, v = tensors(n, 3)
    g16 = g.bfloat16()
    wide = (p.clone(), g16.float(), m.clone(), v.clone())
    ref = (p.clone(), g16.float(), m.clone(), v.clone())
    torch.ops.tailor_portable.adamw_bf16_(p, g16, m, v, *args, noise)
    torch.ops.tailor_portable.adamw_bf16_(*wide, *args, noise)
    adamw_bf16.reference_step(*ref, args, noise)
    for a, b, c in zip((p, m, v), (wide[0], wide[2], wide[3]), (ref[0], ref[2], ref[3])):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(p, tensors(n, 3)[0])
