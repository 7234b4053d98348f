"""--resume continues exactly or refuses (issue 19): changed settings, a resume before the first checkpoint,
and a kill in the middle of writing a checkpoint or the model folder."""

from __future__ import annotations

import signal
import textwrap

import pytest

from conftest import read_jsonl
from tailor.config import load_config
from tailor.errors import TailorError
from tailor.workflow import train_job
from cli_process import tailor_cli

TRAIN = {"max_steps": 6, "eval_every": 3, "save_every": 2, "log_every": 1}


def train_steps(run_dir) -> list[int]:
    return [r["step"] for r in read_jsonl(run_dir / "log.jsonl") if r["split"] == "train"]


@pytest.mark.parametrize("override, named", [
    ("train.learning_rate=0.01", "train.learning_rate"),
    ("train.batch_size=2", "train.batch_size"),
    ("train.grad_accum=2", "train.grad_accum"),
    ("train.seed=7", "train.seed"),
])
def test_resume_refuses_settings_that_break_exact_resume(tiny_config, override, named):
    path = tiny_config(train=TRAIN)
    cfg = load_config(path)
    train_job(cfg)
    before = (cfg.run_dir / "config.yaml").read_text()
    with pytest.raises(TailorError, match=named.replace(".", r"\.")):
        train_job(load_config(path, [override, "train.max_steps=8"]), resume=True)
    assert (cfg.run_dir / "config.yaml").read_text() == before  # the run still says what it was trained with


def test_resume_with_more_steps_continues_the_run(tiny_config):
    path = tiny_config(train=TRAIN)
    cfg = load_config(path)
    train_job(cfg)
    summary = train_job(load_config(path, ["train.max_steps=8", "train.log_every=2"]), resume=True)
    assert summary["train"]["steps"] == 8
    assert train_steps(cfg.run_dir) == [1, 2, 3, 4, 5, 6, 8]
    assert "max_steps: 8" in (cfg.run_dir / "config.yaml").read_text()


def test_resume_before_the_first_checkpoint_starts_the_log_again(tiny_config):
    path = tiny_config(train={**TRAIN, "save_every": 0})  # the only checkpoint would be at the end

    def stop_at_first_validation(step, metrics):
        raise KeyboardInterrupt  # as Ctrl-C would, before any checkpoint exists

    cfg = load_config(path)
    with pytest.raises(KeyboardInterrupt):
        train_job(cfg, on_validation=stop_at_first_validation)
    assert train_steps(cfg.run_dir) == [1, 2, 3]
    assert not (cfg.run_dir / "checkpoints").exists()
    train_job(load_config(path), resume=True)
    assert train_steps(cfg.run_dir) == [1, 2, 3, 4, 5, 6]
    validations = [r["step"] for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "validation"]
    assert validations == [3, 6]


# Run before `tailor train`: the command SIGKILLs itself inside fsutil.write_dir, while renaming in the Nth folder named like
# `target` (the old one already moved aside for model/), i.e. in the middle of a save.
KILLING_SAVE = textwrap.dedent("""
    import os, signal
    from pathlib import Path
    import tailor.fsutil as fsutil

    target, nth = {target!r}, {nth}
    seen = [0]
    real = os.replace

    def replace(src, dst):
        if Path(dst).name.startswith(target) and Path(src).name.startswith("."):
            seen[0] += 1
            if seen[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    fsutil.os.replace = replace
""")


def run_cli(*args, preamble=None):
    return tailor_cli(*args, preamble=preamble)


@pytest.mark.parametrize("target, nth", [("model", 2), ("step-", 3)])
def test_a_kill_during_a_save_always_resumes_to_the_same_run(tiny_config, tmp_path, target, nth):
    # model: killed between moving the old model/ aside and renaming the new one in (the second save of model/);
    # step-: killed with the third checkpoint built but not yet renamed into place.
    path = tiny_config(train={"max_steps": 12, "eval_every": 2, "save_every": 2, "log_every": 1, "learning_rate": 1e-2})
    straight = run_cli("train", path, "name=straight")
    assert straight.returncode == 0, straight.stderr
    killed = run_cli("train", path, "name=killed", preamble=KILLING_SAVE.format(target=target, nth=nth))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = tmp_path / "runs" / "killed"
    leftovers = [p.name for p in list(run.iterdir()) + list((run / "checkpoints").iterdir()) if ".tailor-" in p.name]
    assert leftovers, "the kill left no half-done swap: it did not happen inside write_dir"
    if target == "model":
        assert not (run / "model").exists()  # the moment the issue describes: no model/ at all
    resumed = run_cli("train", path, "name=killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not [p.name for p in list(run.iterdir()) + list((run / "checkpoints").iterdir()) if ".tailor-" in p.name]
    want = read_jsonl(tmp_path / "runs" / "straight" / "log.jsonl")
    got = read_jsonl(run / "log.jsonl")
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
    for a, b in zip(want, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a["step"], a["split"])
    assert (run / "model" / "config.json").is_file()
    assert (run / "model" / "metrics.json").read_text() == (tmp_path / "runs" / "straight" / "model" / "metrics.json").read_text()


def test_resume_refuses_another_best_model_metric(tiny_config):
    path = tiny_config(train=TRAIN)
    train_job(load_config(path))
    with pytest.raises(TailorError, match=r"eval\.mode"):
        train_job(load_config(path, ["eval.mode=max", "eval.metric=perplexity"]), resume=True)
