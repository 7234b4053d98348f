"""The training loop's memory settings: train.max_pass_tokens splits a micro-batch into passes whose gradients
add up to the same step; train.retain_memory_mb is checked like every number."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import read_jsonl
from tailor.config import load_config
from tailor.errors import TailorError
from tailor.train import loop
from tailor.train.loop import CPU_PASS_TOKENS, pass_cap, passes
from tailor.workflow import train_job


def test_passes_keep_every_row_once_within_the_cap():
    lengths = [10, 30, 20, 25, 5, 30, 12, 8]
    idx = [1, 3, 5, 2]  # longest row 30
    assert passes(idx, lengths, 0) == [idx]
    assert passes(idx, lengths, 120) == [idx]  # 4 x 30 fits
    assert passes(idx, lengths, 60) == [[1, 3], [5, 2]]
    assert passes(idx, lengths, 89) == [[1, 3], [5, 2]]
    assert passes(idx, lengths, 90) == [[1, 3, 5], [2]]
    assert passes(idx, lengths, 7) == [[1], [3], [5], [2]]  # a row longer than the cap still runs, alone


def test_a_micro_batch_in_passes_trains_as_in_one(tiny_config):
    """fp32, so the only difference is the order of the sums: the losses and the weights agree to rounding."""
    runs = {}
    for name, cap in (("whole", 0), ("passes", 1)):  # 1 token: every row its own pass
        cfg = load_config(tiny_config(name=name, train={"max_steps": 4, "max_pass_tokens": cap, "eval_every": 0,
                                                         "save_every": 0, "warmup_steps": 0}))
        train_job(cfg)
        log = read_jsonl(cfg.run_dir / "log.jsonl")
        runs[name] = ([r["loss"] for r in log if r["split"] == "train"],
                      AutoModelForCausalLM.from_pretrained(cfg.run_dir / "model").state_dict())
    (losses, weights), (split_losses, split_weights) = runs["whole"], runs["passes"]
    assert len(losses) == 4
    assert split_losses == pytest.approx(losses, rel=1e-5)
    for key, value in weights.items():
        torch.testing.assert_close(split_weights[key], value, rtol=1e-4, atol=1e-5)
    # and training did change the weights (the comparison is not between two untouched models)
    start = AutoModelForCausalLM.from_pretrained(load_config(tiny_config()).model.name).state_dict()
    moved = sum(not torch.equal(start[k], v) for k, v in weights.items())
    assert moved > len(weights) // 2


def test_auto_caps_passes_on_the_cpu_speed_paths_only():
    assert pass_cap("auto", True) == CPU_PASS_TOKENS == 1024
    assert pass_cap("auto", False) == 0  # a GPU, DDP or the plain path: one pass
    assert pass_cap(0, True) == 0 and pass_cap(512, False) == 512


def test_the_loop_passes_the_auto_cap(tiny_config, monkeypatch):
    caps = []
    real = loop.passes
    monkeypatch.setattr(loop, "passes", lambda idx, lengths, cap: caps.append(cap) or real(idx, lengths, cap))
    cfg = load_config(tiny_config(name="auto", train={"max_steps": 2, "eval_every": 0, "save_every": 0}))
    assert cfg.train.max_pass_tokens == "auto"  # the default
    train_job(cfg)
    assert caps and set(caps) == {CPU_PASS_TOKENS}
    cfg = load_config(tiny_config(name="off"), ["train.max_pass_tokens=0", "train.max_steps=1", "train.eval_every=0",
                                                "train.save_every=0"])
    caps.clear()
    train_job(cfg)
    assert caps and set(caps) == {0}


def test_a_word_for_the_pass_cap_names_auto(tiny_config):
    with pytest.raises(TailorError, match=r"max_pass_tokens: expected int, got 'lots', or one of 'auto'"):
        load_config(tiny_config(), ["train.max_pass_tokens=lots"])


@pytest.mark.parametrize("setting", ["max_pass_tokens=-1", "max_pass_tokens=lots", "retain_memory_mb=-1", "retain_memory_mb=99999999"])
def test_memory_settings_out_of_range_are_refused(tiny_config, setting):
    with pytest.raises(TailorError, match=setting.split("=")[0]):
        load_config(tiny_config(), [f"train.{setting}"])


@pytest.mark.parametrize("cap", [0, 1], ids=["one-pass", "row-a-pass"])
def test_bf16_gradients_train_as_fp32_ones(tiny_config, monkeypatch, cap):
    """adamw_bf16 reads the lean projections' gradients as the bf16 products they are (kernels/linear.py), summed in
    fp32 from a micro-batch's second pass on: the same steps as with fp32 gradients, to the order of the norm's sums.
    In one pass the optimizer reads them bf16; a row a pass leaves them fp32."""
    from tailor.kernels import linear
    from tailor.train.adamw_bf16 import AdamWBf16

    runs, kept, read = {}, [], set()
    real = linear.weight_gradient
    monkeypatch.setattr(linear, "weight_gradient", lambda *args: _spy(real, args, kept))
    step = loop.clip_and_step
    monkeypatch.setattr(loop, "clip_and_step", lambda model, *args: read.update(
        p.grad.dtype for p in model.parameters() if p.grad is not None) or step(model, *args))
    for name, half in (("fp32-grads", False), ("bf16-grads", True)):
        monkeypatch.setattr(AdamWBf16, "reads_bf16_grads", half)
        kept.clear()
        cfg = load_config(tiny_config(name=name, train={
            "max_steps": 3, "max_pass_tokens": cap, "eval_every": 0, "save_every": 0, "warmup_steps": 0,
            "precision": "bf16", "optimizer": "adamw_bf16", "max_grad_norm": 0.5}))
        train_job(cfg)
        log = [r for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "train"]
        runs[name] = ([r["loss"] for r in log], [r["grad_norm"] for r in log],
                      AutoModelForCausalLM.from_pretrained(cfg.run_dir / "model").state_dict())
        assert any(kept) == half  # the bf16 gradients were held by hand, and only when the optimizer reads them
        if cap == 0:  # the optimizer read them bf16 (with a row a pass, most are widened by a later pass)
            assert (torch.bfloat16 in read) == half
        read.clear()
    (losses, norms, weights), (half_losses, half_norms, half_weights) = runs["fp32-grads"], runs["bf16-grads"]
    assert len(losses) == 3 and max(norms) > 0.5  # clipped: the norm's value matters
    assert half_losses == pytest.approx(losses, rel=1e-6) and half_norms == pytest.approx(norms, rel=1e-5)
    for key, value in weights.items():
        torch.testing.assert_close(half_weights[key], value, rtol=1e-5, atol=1e-6)


def _spy(real, args, kept):
    out = real(*args)
    kept.append(out is None)
    return out
