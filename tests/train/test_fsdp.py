"""`tailor train` with train.strategy fsdp under torchrun: 2 CPU processes (gloo) shard the tiny model
with FSDP2 and must train like one process, write plain Hugging Face folders from rank 0, and resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from multiprocess_helpers import assert_matches_one_process, assert_same_final_model, torchrun
from tailor.config import load_config
from tailor.errors import TailorError
from tailor.train import distributed
from tailor.workflow import train_job

# 41 training samples in batches of 5: each epoch ends with a micro-batch of one sample, so one rank's
# share of it is empty (it runs a stand-in sample at weight 0). A constant schedule makes a 3-step run
# the first half of a 6-step run, so resuming it with max_steps=6 must give the 6-step run's losses.
TRAIN = {"batch_size": 5, "grad_accum": 2, "max_steps": 6, "eval_every": 3, "save_every": 3, "log_every": 1,
         "learning_rate": 2e-3, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.1,
         "optimizer": "adamw"}  # the processes' optimizer for the one-process reference too (auto: adamw_fp8 there)


def test_strategy_setting_is_validated_and_fsdp_is_a_no_op_in_one_process(tiny_config):
    with pytest.raises(TailorError, match="strategy"):
        load_config(tiny_config(train={"strategy": "zero3"}))
    assert not distributed.shard_model(torch.nn.Linear(2, 2), "fsdp")  # no process group: nothing sharded


def test_fsdp_two_processes_match_one_process_and_resume(tiny_config):
    cfg_path = tiny_config(train=TRAIN)
    single = load_config(cfg_path, ["name=single"])
    train_job(single)
    run = single.run_dir.parent / "fsdp"

    first = torchrun(cfg_path, "train.strategy=fsdp", "name=fsdp", "train.max_steps=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000003"
    assert first.stdout.count("report:") == 1  # rank 0 alone writes the report
    # The checkpoint is a plain Hugging Face folder with the whole (gathered) model, not a shard of it.
    ckpt = run / "checkpoints" / "step-000003"
    full = load_file(ckpt / "model.safetensors")
    assert full["model.embed_tokens.weight"].shape[0] == json.loads((ckpt / "config.json").read_text())["vocab_size"]
    optim = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert "model.embed_tokens.weight" in optim["state"]  # full optimizer state, keyed by parameter name

    resumed = torchrun(cfg_path, "train.strategy=fsdp", "name=fsdp", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert_matches_one_process(single.run_dir, run)

    assert_same_final_model(single.run_dir, run)  # same weights as one process's, loadable, complete


def test_resuming_an_fsdp_checkpoint_without_fsdp_names_the_setting(tiny_config, tmp_path):
    """A checkpoint whose optimizer state is keyed by name (FSDP) cannot go into a plain optimizer."""
    from tailor.train.checkpoint import load_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = tmp_path / "step-000001"
    ckpt.mkdir()
    torch.save({"state": {"weight": {"step": torch.tensor(1.0)}}, "param_groups": []}, ckpt / "optimizer.pt")
    with pytest.raises(TailorError, match="train.strategy"):
        load_checkpoint(ckpt, model, opt, None)
