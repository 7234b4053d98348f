"""train.optimizer adamw_8bit / adamw_4bit (torchao): the moments are stored quantized, training follows
32-bit AdamW closely, a checkpoint resumes exactly, and the strategies it does not run under are refused."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import read_jsonl
from tailor.config import load_config
from tailor.errors import TailorError
from tailor.train import lowbit
from tailor.workflow import train_job

TRAIN = {"max_steps": 6, "eval_every": 0, "save_every": 3, "warmup_steps": 0, "schedule": "constant"}


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "log.jsonl") if r["split"] == "train"]


def moments(run_dir, step: int) -> dict:
    """The AdamW moments of the embedding (the tiny model's one tensor of >= 4,096 values) in a checkpoint."""
    state = torch.load(run_dir / "checkpoints" / f"step-{step:06d}" / "optimizer.pt", weights_only=True)["state"]
    return max(state.values(), key=lambda s: s["exp_avg"].numel())


def test_quantized_moments_train_like_adamw(tiny_config):
    kind, state_type, bits = "adamw_8bit", "OptimState8bit", 8
    runs = {}
    for name in ("adamw", kind):
        cfg = load_config(tiny_config(name=name, train={**TRAIN, "optimizer": name}))
        train_job(cfg)
        runs[name] = cfg.run_dir
    state = moments(runs[kind], 6)
    assert type(state["exp_avg"]).__name__ == state_type  # stored quantized, and loadable without unpickling code
    codes = state["exp_avg"].codes
    assert codes.dtype == torch.uint8 and codes.numel() * 8 == state["exp_avg"].numel() * bits
    exact = moments(runs["adamw"], 6)["exp_avg"]
    assert type(exact) is torch.Tensor
    # The quantized first moment is the 32-bit one to within its blocks' rounding.
    error = (state["exp_avg"].dequantize() - exact).abs().max() / exact.abs().max()
    assert 0 < error < 0.05
    base, low = losses(runs["adamw"]), losses(runs[kind])
    assert len(low) == 6 and low[-1] < low[0]
    assert low == pytest.approx(base, rel=0.02)
    assert low != base  # the moments are rounded: not the same optimizer under another name


def test_a_quantized_optimizer_resumes_exactly(tiny_config):
    """4-bit here (8-bit above): its moments in the checkpoint are 4-bit codes, and a resume continues exactly."""
    path = tiny_config(name="lowbit", train={**TRAIN, "optimizer": "adamw_4bit"})
    straight = load_config(path, ["name=straight"])
    train_job(straight)
    interrupted = load_config(path, ["name=resumed", "train.max_steps=3"])
    train_job(interrupted)
    train_job(load_config(path, ["name=resumed"]), resume=True)
    state = moments(straight.run_dir, 6)["exp_avg"]
    assert type(state).__name__ == "OptimState4bit" and state.codes.numel() * 2 == state.numel()  # two codes a byte
    assert losses(interrupted.run_dir) == pytest.approx(losses(straight.run_dir), rel=1e-6)
    with pytest.raises(TailorError, match=r"train\.optimizer"):  # the moments cannot continue as another optimizer
        train_job(load_config(path, ["name=resumed", "train.optimizer=adamw", "train.max_steps=9"]), resume=True)


@pytest.mark.parametrize("overrides, message", [
    (["train.optimizer=adamw_16bit"], "adamw_16bit"),
    (["train.optimizer=adamw_8bit", "train.strategy=fsdp"], "train.strategy 'fsdp'"),
])
def test_unknown_or_unsupported_optimizers_are_refused(tiny_config, overrides, message):
    with pytest.raises(TailorError, match=message):
        load_config(tiny_config(), overrides)


def test_torchao_installed_adds_no_warnings_to_a_command():
    """transformers imports torchao at every model load once it is installed; what that import logs about
    CUDA-only extensions and enum registration is dropped (tailor/quiet.py), and nothing else is."""
    script = ("import logging, tailor, transformers.quantizers.auto, torchao\n"
              "logging.getLogger('torchao').warning('a real torchao warning')\n")
    lowbit.optimizer_class("adamw_8bit")  # installed where the tests find it (site-packages or lowbit.FOLDER)
    path = os.pathsep.join([str(lowbit.FOLDER), os.environ.get("PYTHONPATH", "")])  # where transformers sees it
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": path}).stderr
    assert "a real torchao warning" in err  # the filter drops the known messages only
    assert "Failed to load" not in err and "Enum subclass" not in err, err
