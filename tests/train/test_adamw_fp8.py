"""train.optimizer adamw_fp8: AdamW with 8-bit moments and a scale per 256 values. The C++ step equals its torch
reference bit for bit; the codes round to nearest within half a code and a positive second moment never
decodes to zero; the first step is torch's AdamW's; a moment decays with its block's scale; training follows
AdamW closely and a checkpoint resumes exactly."""

import pytest
import torch

from conftest import read_jsonl
from tailor.config import load_config
from tailor.kernels import build
from tailor.train import adamw_bf16, adamw_fp8
from tailor.train.adamw_fp8 import BLOCK, SMALL, AdamWFp8
from tailor.workflow import train_job

TRAIN = {"max_steps": 6, "eval_every": 0, "save_every": 3, "warmup_steps": 0, "schedule": "constant"}


def state(n: int, seed: int = 0):
    """A weight, its gradient and a made-up 8-bit state (every first-moment code, the second's 0..248)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = -(-n // BLOCK)
    p, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen) * 0.1
    m = torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8)
    v = torch.randint(0, 249, (n,), generator=gen, dtype=torch.uint8)
    return p, g, m, torch.rand(blocks, generator=gen) * 0.01, v, torch.rand(blocks, generator=gen) * 1e-3


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16])
def test_the_kernel_is_its_reference_bit_for_bit(grad_dtype):
    assert build.portable_built(), "the optimizer step did not build (see the warning above)"
    n = 3 * 65536 + 77  # several threads' chunks and a ragged last block
    for step, scale, decay in ((1, 1.0, 0.1), (7, 2.5, 0.0), (300, 0.75, 0.01)):
        group = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": decay}
        args = adamw_bf16.constants(group, step, scale)
        ours, ref = list(state(n, step)), list(state(n, step))
        ours[1] = ours[1].to(grad_dtype)
        ref[1] = ref[1].to(grad_dtype).float()  # a bf16 gradient is read exactly
        torch.ops.tailor_portable.adamw_fp8_(*ours, *args)
        adamw_fp8.reference_step(*ref, args)
        for a, b in zip(ours, ref):
            assert torch.equal(a, b.to(a.dtype))
        before = state(n, step)
        assert not torch.equal(ours[0], before[0]) and not torch.equal(ours[2], before[2])  # weights and codes moved


def test_codes_round_to_nearest_and_a_second_moment_never_decodes_to_zero():
    gen = torch.Generator().manual_seed(3)
    r = torch.rand(100_000, generator=gen) ** 8  # magnitudes over the block's max, down to ~1e-40
    one = torch.ones(())
    m = torch.where(torch.rand(r.shape, generator=gen) < 0.5, -r, r)
    back_m = adamw_fp8.decode_m(adamw_fp8.encode_m(m, one))
    back_v = adamw_fp8.decode_v(adamw_fp8.encode_v(r, one))
    in_m, in_v = r >= 2.0**-14, r >= 2.0**-31
    # 3 mantissa bits: within half a code, 1/16 of the value
    assert ((back_m - m).abs() <= m.abs() / 16)[in_m].all() and (back_m.sign() == m.sign())[in_m].all()
    assert ((back_v - r).abs() <= r / 16)[in_v].all()
    assert (back_m[r < 2.0**-15] == 0).all()  # a tiny first moment is dropped: a smaller step
    assert (back_v[~in_v] == 2.0**-31).all()  # a tiny second moment is raised, never zero: never m / eps
    assert adamw_fp8.decode_m(adamw_fp8.encode_m(torch.tensor([1.0, -1.0]), one)).tolist() == [1.0, -1.0]
    assert adamw_fp8.decode_v(adamw_fp8.encode_v(torch.tensor([1.0, 0.0]), one)).tolist() == [1.0, 2.0**-31]


@pytest.mark.parametrize("kernel", [True, False])
def test_steps_follow_torch_adamw(kernel, monkeypatch):
    """The first step uses the exact moments, so it is torch's AdamW's; later ones differ by the codes' rounding."""
    if not kernel:
        monkeypatch.setattr(build, "portable_built", lambda: False)
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(64, 300, generator=gen)
    grads = [torch.randn(64, 300, generator=gen) for _ in range(20)]
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    mine = AdamWFp8([ours], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    torch_adamw = torch.optim.AdamW([theirs], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for n, g in enumerate(grads):
        ours.grad, theirs.grad = g.clone(), g.clone()
        mine.step()
        torch_adamw.step()
        if n == 0:
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    s, exact = mine.state[ours], torch_adamw.state[theirs]
    assert s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.uint8
    assert s["exp_avg_scale"].shape == (64 * 300 // BLOCK,)
    v = (adamw_fp8._blocks(adamw_fp8.decode_v(s["exp_avg_sq"])) * s["exp_avg_sq_scale"][:, None]).view(64, 300)
    m = (adamw_fp8._blocks(adamw_fp8.decode_m(s["exp_avg"])) * s["exp_avg_scale"][:, None]).view(64, 300)
    # 3 mantissa bits round each value by up to 1/16; rounded to nearest, the errors stay that size, unbiased
    relative = (v - exact["exp_avg_sq"]) / exact["exp_avg_sq"]
    assert relative.abs().mean() < 0.08 and abs(relative.mean()) < 0.02
    off = (m - exact["exp_avg"]) / exact["exp_avg"].abs().mean()
    assert off.abs().mean() < 0.08 and abs(off.mean()) < 0.01
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-2)  # 20 steps of 1e-2: close, not equal
    assert not torch.equal(ours, theirs)


def test_a_moment_decays_with_its_block_scale():
    """No gradient for 200 steps: the second moment decays by 0.999 a step, far less than half a code; it follows
    its block's scale, which is stored exactly, so every value decays as in fp32."""
    n = 100_000
    p = torch.nn.Parameter(torch.zeros(n))
    opt = AdamWFp8([p], lr=1e-3)
    p.grad = torch.randn(n, generator=torch.Generator().manual_seed(4))
    opt.step()  # makes the state
    s = opt.state[p]
    start = adamw_fp8._blocks(adamw_fp8.decode_v(s["exp_avg_sq"])) * s["exp_avg_sq_scale"][:, None]
    p.grad = torch.zeros(n)
    for _ in range(200):
        opt.step()
    end = adamw_fp8._blocks(adamw_fp8.decode_v(s["exp_avg_sq"])) * s["exp_avg_sq_scale"][:, None]
    ratio = end[start > 0] / start[start > 0]
    assert ratio.mean().item() == pytest.approx(0.999**200, rel=0.01) and ratio.std().item() < 0.05


def test_small_weights_keep_bf16_moments_and_the_state_is_2_bytes_a_value():
    big, small = torch.nn.Parameter(torch.randn(SMALL * 4 + 3)), torch.nn.Parameter(torch.randn(SMALL - 1))
    opt = AdamWFp8([big, small], lr=1e-3)
    big.grad, small.grad = torch.randn_like(big), torch.randn_like(small)
    opt.step()
    assert opt.state[small]["exp_avg"].dtype == torch.bfloat16 and "exp_avg_scale" not in opt.state[small]
    held = sum(t.numel() * t.element_size() for k, t in opt.state[big].items() if k != "step")
    assert held == 2 * big.numel() + 2 * 4 * (-(-big.numel() // BLOCK))


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "log.jsonl") if r["split"] == "train"]


def test_training_follows_adamw_and_resumes_exactly(tiny_config):
    runs = {}
    for name in ("adamw", "adamw_fp8"):
        cfg = load_config(tiny_config(name=name, train={**TRAIN, "optimizer": name}))
        train_job(cfg)
        runs[name] = cfg.run_dir
    base, low = losses(runs["adamw"]), losses(runs["adamw_fp8"])
    assert len(low) == 6 and low[-1] < low[0]
    assert low == pytest.approx(base, rel=0.03)
    assert low != base  # the moments are rounded: not the same optimizer under another name
    saved = torch.load(runs["adamw_fp8"] / "checkpoints" / "step-000006" / "optimizer.pt", weights_only=True)["state"]
    assert torch.uint8 in {s["exp_avg"].dtype for s in saved.values()}
    path = tiny_config(name="fp8", train={**TRAIN, "optimizer": "adamw_fp8"})
    interrupted = load_config(path, ["name=resumed", "train.max_steps=3"])
    train_job(interrupted)
    train_job(load_config(path, ["name=resumed"]), resume=True)
    assert losses(interrupted.run_dir) == low  # bit for bit: the codes come back as uint8, the scales as fp32
