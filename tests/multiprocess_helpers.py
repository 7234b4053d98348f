"""Running `tailor train` in two processes with torchrun, and comparing its log with one process's."""

import json
import os
import subprocess
import sys

import pytest


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path).read().splitlines() if line]


def by_split(run_dir, split):
    return [r for r in read_jsonl(run_dir / "log.jsonl") if r["split"] == split]


def torchrun(cfg_path, *args, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tailor.cli", "train", str(cfg_path), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, env=env, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def assert_matches_one_process(single_dir, run_dir) -> None:
    """Per-step train and validation figures equal the single-process run's; rank 1 logged nothing."""
    one, two = by_split(single_dir, "train"), by_split(run_dir, "train")
    # One log line per step: rank 1 wrote nothing (or every line would be there twice).
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 7))
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["lr"] == pytest.approx(a["lr"])
    val_one, val_two = by_split(single_dir, "validation"), by_split(run_dir, "validation")
    assert [r["step"] for r in val_two] == [3, 6]
    for a, b in zip(val_one, val_two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


def assert_same_final_model(single_dir, run_dir) -> None:
    """The 2-process run's best model equals one process's, loads with transformers, and the run completed 6 steps."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    w_one, w_two = load_file(single_dir / "model" / "model.safetensors"), load_file(run_dir / "model" / "model.safetensors")
    assert w_one.keys() == w_two.keys()
    for k in w_one:
        torch.testing.assert_close(w_two[k], w_one[k], rtol=1e-4, atol=1e-6)
    AutoModelForCausalLM.from_pretrained(run_dir / "model")
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["train"]["steps"] == 6
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-000006"
