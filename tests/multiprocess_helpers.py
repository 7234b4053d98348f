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
