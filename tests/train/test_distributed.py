"""`tailor train` under torchrun: 2 CPU processes (gloo) must train exactly like one process."""

import json
import signal
import subprocess
import time

import psutil
import pytest

from multiprocess_helpers import assert_matches_one_process, by_split, torchrun
from tailor.config import load_config
from tailor.train import distributed
from tailor.workflow import train_job

# 41 training samples in batches of 5: each epoch has one micro-batch of a single sample, so one
# rank's share of it is empty (it runs a stand-in sample at weight 0).
TRAIN = {"batch_size": 5, "grad_accum": 2, "max_steps": 6, "eval_every": 3, "save_every": 2, "log_every": 1,
         "learning_rate": 2e-3, "warmup_steps": 1,
         "optimizer": "adamw"}  # the processes' optimizer for the one-process reference too (auto: adamw_fp8 there)


def test_shard_and_local_batches_without_a_process_group():
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.shard([4, 2, 9]) == [4, 2, 9]
    assert distributed.all_reduce_sum(3.0, 4) == [3.0, 4]
    batches, weights = distributed.local_batches([[1, 2], [3]], lambda ids: ids)
    assert batches == [[1, 2], [3]] and weights == [1.0, 1.0]


def test_two_processes_match_one_process_and_only_rank0_writes(tiny_config):
    cfg_path = tiny_config(train=TRAIN)
    single = load_config(cfg_path, ["name=single"])
    train_job(single)
    result = torchrun(cfg_path, "name=ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    run = single.run_dir.parent / "ddp"
    assert_matches_one_process(single.run_dir, run)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["train"]["steps"] == 6
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000006"
    assert (run / "model" / "config.json").is_file()
    assert result.stdout.count("report:") == 1  # the run report is written by rank 0 only


def test_distributed_resume_after_sigkill(tiny_config):
    train = {**TRAIN, "grad_accum": 1, "max_steps": 30, "save_every": 2, "eval_every": 15}
    cfg_path = tiny_config(train=train)
    single = load_config(cfg_path, ["name=single"])
    train_job(single)
    run = single.run_dir.parent / "killed"
    proc = torchrun(cfg_path, "name=killed", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (run / "checkpoints" / "latest").exists() and time.time() < deadline:
        time.sleep(0.05)
    tree = psutil.Process(proc.pid).children(recursive=True)
    for p in tree:
        p.send_signal(signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(tree, timeout=30)
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest != "step-000030", "the run finished before it could be killed"
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    resumed = torchrun(cfg_path, "name=killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again, one = by_split(run, "train"), by_split(single.run_dir, "train")
    assert [r["step"] for r in again] == list(range(1, 31))
    for a, b in zip(one, again):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
