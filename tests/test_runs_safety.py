"""Nothing lost, nothing deleted that tailor did not make (issue 19): run names, --overwrite, the run lock,
status of killed runs, durable folder swaps and their recovery, weights-only rng.pt."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from tailor.config import load_config
from tailor.errors import TailorError
from tailor.fsutil import recover, write_dir
from tailor.runs import run_status
from tailor.train.checkpoint import latest_checkpoint
from tailor.workflow import LOCK, check_run_dir, train_job


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- 8: run names and --overwrite --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "../escaped", "a/b", "/tmp/absolute"])
def test_a_run_name_must_be_one_plain_folder_name(tiny_config, tmp_path, name):
    (tmp_path / "precious.txt").write_text("the project")
    cfg = load_config(tiny_config(), [f"name={name}"])
    with pytest.raises(TailorError, match="one plain folder name"):
        train_job(cfg, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "the project"


def test_overwrite_deletes_only_a_folder_tailor_made(tiny_config, tmp_path):
    theirs = tmp_path / "runs" / "theirs"
    theirs.mkdir(parents=True)
    (theirs / "config.yaml").write_text("someone else's file\n")
    cfg = load_config(tiny_config(), ["name=theirs"])
    with pytest.raises(TailorError, match="not a tailor run folder"):
        train_job(cfg, overwrite=True)
    assert (theirs / "config.yaml").read_text() == "someone else's file\n"


def test_search_overwrite_refuses_escaping_names_and_foreign_folders(tiny_config, tmp_path):
    from tailor.search.study import prepare_folder

    with pytest.raises(TailorError, match="one plain folder name"):
        prepare_folder(load_config(tiny_config(), ["name=.."]), overwrite=True)
    foreign = tmp_path / "runs" / "mine-search"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(TailorError, match="not a tailor search folder"):
        prepare_folder(load_config(tiny_config(), ["name=mine"]), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


# ---- 11: status of a killed run, and one job per run folder -------------------------------------------------

def test_a_running_status_whose_process_is_gone_reads_interrupted(tmp_path):
    host = socket.gethostname()
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "started": "x", "pid": dead_pid(), "host": host}))
    assert run_status(tmp_path)["status"] == "interrupted"
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "started": "x", "pid": os.getpid(), "host": host}))
    assert run_status(tmp_path)["status"] == "running"


def test_the_report_of_a_killed_run_says_interrupted(tmp_path):
    from tailor.cli import main
    from tailor.report.html import build_report

    (tmp_path / "config.yaml").write_text("name: killed\n")
    (tmp_path / "status.json").write_text(json.dumps(
        {"status": "running", "started": "x", "pid": dead_pid(), "host": socket.gethostname()}))
    assert 'class="status-interrupted"' in build_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    assert 'class="status-interrupted"' in (tmp_path / "report.html").read_text()


def test_a_second_job_on_a_locked_run_folder_is_refused(tiny_config, tmp_path):
    cfg = load_config(tiny_config(train={"max_steps": 2, "eval_every": 2, "save_every": 2}))
    train_job(cfg)
    status = json.loads((cfg.run_dir / "status.json").read_text())
    assert status["pid"] == os.getpid() and status["host"] == socket.gethostname()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        f = open({str(cfg.run_dir / LOCK)!r}, "a+")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TailorError, match="in use by another tailor job"):
            train_job(load_config(tiny_config(train={"max_steps": 4, "eval_every": 2, "save_every": 2})), resume=True)
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((cfg.run_dir / "status.json").read_text())["status"] == "complete"  # untouched by the refused job


# ---- 12: durable, recoverable folder swaps ---------------------------------------------------------------

def fill_with(text):
    def fill(tmp):
        (tmp / "weights.txt").write_text(text)
    return fill


def killed_writer(folder, name: str, when: str) -> None:
    """A process that writes folder/name with write_dir and is SIGKILLed `when`: 'filling' (inside fill) or
    'swapping' (after the old folder was renamed aside, before the new one is renamed in)."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import tailor.fsutil as fsutil

        real = os.replace
        def replace(src, dst):
            if {when!r} == "swapping" and Path(dst).name == {name!r}:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)
        fsutil.os.replace = replace

        def fill(tmp):
            (tmp / "weights.txt").write_text("half")
            if {when!r} == "filling":
                os.kill(os.getpid(), signal.SIGKILL)
        fsutil.write_dir(Path({str(folder)!r}) / {name!r}, fill)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL


def test_a_kill_between_the_renames_loses_no_folder(tmp_path):
    write_dir(tmp_path / "model", fill_with("old"))
    killed_writer(tmp_path, "model", "swapping")
    assert not (tmp_path / "model").exists()  # what the kill left: the old folder under its aside name
    assert recover(tmp_path)
    assert (tmp_path / "model" / "weights.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_write_dir_recovers_a_swap_cut_short_before_writing_again(tmp_path):
    write_dir(tmp_path / "model", fill_with("old"))
    killed_writer(tmp_path, "model", "swapping")
    write_dir(tmp_path / "model", fill_with("new"))
    assert (tmp_path / "model" / "weights.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_leftover_temporary_folders_of_dead_writers_are_cleaned_and_nothing_else(tmp_path):
    write_dir(tmp_path / "model", fill_with("old"))
    killed_writer(tmp_path, "model", "filling")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model"]
    assert len(leftovers) == 1 and ".tailor-tmp-" in leftovers[0]
    (tmp_path / ".model.tmp-mine").mkdir()  # not tailor's prefix: someone else's
    (tmp_path / f".model.tailor-tmp-{os.getpid()}-live").mkdir()  # a live writer's (this process)
    recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".model.tmp-mine", f".model.tailor-tmp-{os.getpid()}-live", "model"])
    assert (tmp_path / "model" / "weights.txt").read_text() == "old"


def test_renames_are_made_durable_by_syncing_the_parent_folder(tmp_path, monkeypatch):
    import stat

    synced = []
    real = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            synced.append(st.st_ino)
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    from tailor.fsutil import write_text

    write_dir(tmp_path / "model", fill_with("x"))
    assert tmp_path.stat().st_ino in synced
    synced.clear()
    write_text(tmp_path / "latest", "step-000002\n")
    assert tmp_path.stat().st_ino in synced


def checkpoint_folders(run, *steps):
    for step in steps:
        folder = run / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps({"step": step}))


def test_latest_naming_a_missing_checkpoint_falls_back_to_the_newest_complete_one(tmp_path):
    checkpoint_folders(tmp_path, 2, 4)
    (tmp_path / "checkpoints" / "step-000006").mkdir()  # incomplete: no state.json
    (tmp_path / "checkpoints" / "latest").write_text("step-000008\n")
    assert latest_checkpoint(tmp_path).name == "step-000004"
    (tmp_path / "checkpoints" / "latest").write_text("step-000006\n")
    assert latest_checkpoint(tmp_path).name == "step-000004"


def test_a_checkpoint_moved_aside_by_a_killed_writer_is_found_again(tmp_path):
    checkpoint_folders(tmp_path, 2)
    (tmp_path / "checkpoints" / "latest").write_text("step-000002\n")
    killed_writer(tmp_path / "checkpoints", "step-000002", "swapping")
    assert latest_checkpoint(tmp_path).name == "step-000002"
    assert json.loads((tmp_path / "checkpoints" / "step-000002" / "state.json").read_text()) == {"step": 2}


# ---- 13: rng.pt holds no pickled Python objects ------------------------------------------------------------

def test_rng_state_round_trips_through_a_weights_only_load(tiny_model, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from tailor.train import checkpoint
    from tailor.train.loop import make_optimizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    optimizer = make_optimizer(model, 1e-3, 0.0, [0.9, 0.999])
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=10)
    random.seed(11)
    torch.manual_seed(12)
    random.gauss(0, 1)  # leaves a cached second value in Python's state
    path = checkpoint.save_checkpoint(tmp_path, 3, model, tokenizer, optimizer, scheduler, {"best": 1.0}, "name: x\n")
    want = [random.random() for _ in range(5)], random.gauss(0, 1), torch.rand(3)

    real = torch.load

    def weights_only_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "tailor unpickled a checkpoint file"
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", weights_only_load)
    random.seed(0)
    torch.manual_seed(0)
    state = checkpoint.load_checkpoint(path, model, optimizer, scheduler)
    assert state["step"] == 3
    got = [random.random() for _ in range(5)], random.gauss(0, 1), torch.rand(3)
    assert got[:2] == want[:2]
    assert torch.equal(got[2], want[2])
    saved = real(path / "rng.pt", weights_only=True)
    assert set(saved) >= {"torch", "python"}
