import csv
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from tailor.config import load_config
from tailor.errors import TailorError
from tailor.search.space import baseline_params, check_space, grid_values, trial_config
from tailor.search.study import open_study, prepare_folder, search_dir, search_job
from cli_process import Started, tailor_cli

TRAIN = {"max_steps": 4, "eval_every": 2, "save_every": 2, "log_every": 1, "warmup_steps": 0}


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path).read().splitlines() if line]


def test_space_entries_are_checked_against_the_config(tiny_config):
    with pytest.raises(TailorError, match="learning_rat'.*Did you mean 'learning_rate'"):
        check_space(load_config(tiny_config(search={"space": {"train.learning_rat": [1e-3]}})))
    with pytest.raises(TailorError, match="search.space.train.batch_size = 0"):
        check_space(load_config(tiny_config(search={"space": {"train.batch_size": [0, 4]}})))
    with pytest.raises(TailorError, match="needs 'high'"):
        load_config(tiny_config(search={"space": {"train.learning_rate": {"type": "float", "low": 1e-5}}}))
    with pytest.raises(TailorError, match="log-scale parameter needs low > 0"):
        load_config(tiny_config(search={"space": {"train.weight_decay": {"type": "float", "low": 0, "high": 1, "log": True}}}))
    with pytest.raises(TailorError, match="search.space is empty"):
        check_space(load_config(tiny_config()))


def test_trial_config_overrides_dotted_keys_and_baseline_reads_them(tiny_config):
    base = load_config(tiny_config(search={"space": {
        "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "decode.num_beams": [1, 2]}}))
    cfg = trial_config(base, {"train.learning_rate": 3e-3, "decode.num_beams": 2}, name="t")
    assert (cfg.train.learning_rate, cfg.decode.num_beams, cfg.name) == (3e-3, 2, "t")
    assert base.train.learning_rate == 1e-3  # the base is untouched
    assert baseline_params(base) == {"train.learning_rate": 1e-3, "decode.num_beams": 1}
    outside = load_config(tiny_config(search={"space": {"train.learning_rate": {"type": "float", "low": 1e-2, "high": 1e-1}}}))
    assert baseline_params(outside) is None


def test_grid_values():
    assert grid_values("k", {"type": "int", "low": 2, "high": 8, "step": 3}) == [2, 5, 8]
    assert grid_values("k", {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1}) == [0.0, 0.1, 0.2]
    assert grid_values("k", {"type": "categorical", "choices": ["a", "b"]}) == ["a", "b"]
    assert grid_values("k", {"type": "float", "low": 1e-5, "high": 1e-3, "log": True, "grid": [1e-5, 1e-4]}) == [1e-5, 1e-4]
    with pytest.raises(TailorError, match="grid search needs"):
        grid_values("k", {"type": "float", "low": 1e-5, "high": 1e-3, "log": True})


def test_search_writes_best_config_table_plots_report_and_continues(tiny_config):
    space = {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
             "train.batch_size": [2, 4]}
    cfg = load_config(tiny_config(train=TRAIN, search={"space": space, "sampler": "random", "pruner": "none"}))
    summary = search_job(cfg, trials=3)
    folder = search_dir(cfg)
    study = open_study(cfg, folder)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    # Trial 0 runs the config's own values; the objective is the best validation loss of the trial's run.
    assert study.trials[0].params == {"train.learning_rate": 1e-3, "train.batch_size": 4}
    assert summary["baseline"]["value"] == study.trials[0].value
    for t in study.trials:
        val = [r["loss"] for r in read_jsonl(folder / "trials" / f"trial-{t.number:04d}" / "log.jsonl")
               if r["split"] == "validation"]
        assert t.value == pytest.approx(min(val))
    best = study.best_trial
    assert summary["best"]["trial"] == best.number
    # best.yaml is a config `tailor train` takes, with the best values.
    best_cfg = load_config(folder / "best.yaml")
    assert best_cfg.train.learning_rate == pytest.approx(best.params["train.learning_rate"])
    assert best_cfg.train.batch_size == best.params["train.batch_size"]
    assert best_cfg.name == "tiny-best" and not best_cfg.search.space
    # Only the best trial keeps its model; no finished trial keeps checkpoints.
    for t in study.trials:
        run = folder / "trials" / f"trial-{t.number:04d}"
        assert (run / "model").is_dir() == (t.number == best.number)
        assert not (run / "checkpoints").exists()
    rows = list(csv.DictReader(open(folder / "trials.csv")))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Best vs baseline" in html
    assert {p.name for p in (folder / "plots").iterdir()} == {
        "optimization_history.png", "intermediate_values.png", "param_importances.png"}

    # Rerun with a larger budget: the study continues (3 old trials + 1 new), nothing reruns.
    search_job(cfg, trials=4)
    assert len(open_study(cfg, folder).trials) == 4
    # A different base config does not silently continue the old study.
    other = load_config(tiny_config(train={**TRAIN, "max_steps": 6}, search={"space": space}))
    with pytest.raises(TailorError, match="different config"):
        search_job(other, trials=4)


def test_median_pruner_stops_a_diverging_trial(tiny_config):
    # Trial 0 (the baseline, lr 3e-3) runs to the end; lr 0.5 without clipping diverges and is pruned
    # at its first validation after the warm-up.
    train = {**TRAIN, "max_steps": 8, "learning_rate": 3e-3, "max_grad_norm": 0}
    search = {"space": {"train.learning_rate": [3e-3, 0.5]}, "sampler": "random", "pruner": "median",
              "startup_trials": 1, "min_steps": 2, "baseline": False}
    cfg = load_config(tiny_config(train=train, search=search))
    study = open_study(cfg, prepare_folder(cfg, overwrite=False))
    study.enqueue_trial({"train.learning_rate": 3e-3})
    study.enqueue_trial({"train.learning_rate": 0.5})
    search_job(cfg, trials=2)
    trials = open_study(cfg, search_dir(cfg)).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    pruned_run = search_dir(cfg) / "trials" / "trial-0001"
    steps = [r["step"] for r in read_jsonl(pruned_run / "log.jsonl") if r["split"] == "train"]
    assert max(steps) == 2  # training stopped at the pruned validation
    assert '"pruned"' in (pruned_run / "status.json").read_text()


def test_killed_search_resumes_the_dead_trial_from_its_checkpoint(tiny_config):
    cfg_path = tiny_config(train={**TRAIN, "max_steps": 12, "save_every": 2, "eval_every": 6},
                           search={"space": {"train.learning_rate": [1e-3, 2e-3]}, "pruner": "none"})
    cfg = load_config(cfg_path)
    run = search_dir(cfg) / "trials" / "trial-0000"
    cmd = [sys.executable, "-m", "tailor.cli", "search", str(cfg_path), "--trials", "1"]
    proc = Started(*cmd[3:])
    deadline = time.time() + 120
    while not (run / "checkpoints" / "latest").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int((run / "checkpoints" / "latest").read_text().strip().split("-")[1])
    assert killed_at < 12, "the trial finished before it could be killed"
    again = tailor_cli(*cmd[3:])
    assert again.returncode == 0, again.stderr
    assert "lost their worker" in again.stdout
    trials = open_study(cfg, search_dir(cfg)).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    log = read_jsonl(run / "log.jsonl")
    assert [r["step"] for r in log if r["split"] == "train"] == list(range(1, 13))  # each step once
    # The retry reported the validations the dead worker had logged before its checkpoint, too.
    assert sorted(trials[1].intermediate_values) == [6, 12]
    assert trials[1].value == pytest.approx(min(r["loss"] for r in log if r["split"] == "validation"))


def test_two_workers_share_one_study(tiny_config):
    cfg_path = tiny_config(train={**TRAIN, "max_steps": 2}, search={"space": {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
                                                "sampler": "random", "pruner": "none"})
    cmd = [sys.executable, "-m", "tailor.cli", "search", str(cfg_path), "--trials", "3"]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    cfg = load_config(cfg_path)
    trials = open_study(cfg, search_dir(cfg)).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    # Every worker stops once the study has 3 finished trials (the other's trial may still be in flight
    # then), so two workers never run 2 x 3 trials; each trial has its own run folder.
    assert 3 <= len(complete) <= 4 and len(complete) == len(trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)


def test_cli_search_errors_are_one_paragraph(tiny_config, capsys):
    from tailor.cli import main

    assert main(["search", str(tiny_config())]) == 2
    assert "search.space is empty" in capsys.readouterr().err
    cfg_path = tiny_config(search={"space": {"train.learning_rate": [1e-3]}})
    assert main(["search", str(cfg_path), "--trials", "0"]) == 2
    assert main(["search", str(cfg_path), "--report"]) == 2
    assert "holds no study yet" in capsys.readouterr().err


def test_pruners_and_samplers_from_the_config(tiny_config):
    from tailor.search.study import make_pruner, make_sampler

    def cfg(**search):
        return load_config(tiny_config(search={"space": {"train.batch_size": [2, 4]}, **search}))

    assert isinstance(make_pruner(cfg(pruner="median")), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(cfg(pruner="hyperband"), 6), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(cfg(pruner="asha")), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner(cfg(pruner="none")), optuna.pruners.NopPruner)
    assert isinstance(make_sampler(cfg(sampler="grid")), optuna.samplers.GridSampler)
    assert isinstance(make_sampler(cfg(sampler="random")), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler(cfg()), optuna.samplers.TPESampler)
