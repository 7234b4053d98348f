"""`tailor plan`: data statistics, the run's schedule and a prediction from timed real steps; the estimate
`tailor train` / `tailor run` print at the start (report/plan.py, commands/plan.py)."""

import json
import os

import pytest

from conftest import ASSETS, read_jsonl
from task_fixtures import pairs_data, sentiment_data, task_config, tiny_classifier, tiny_t5  # noqa: F401  (fixtures)
from tailor.report import plan
from cli_process import tailor_cli


def tailor(*args, env=None):
    return tailor_cli(*args, env={**os.environ, **env} if env else None)


def test_plan_prints_data_and_estimate_and_leaves_nothing_behind(tiny_config, tmp_path):
    cfg = tiny_config()
    temp = tmp_path / "temp"
    temp.mkdir()
    out = tmp_path / "plan.json"
    result = tailor("plan", cfg, "--steps", "2", "--json", out, env={"TMPDIR": str(temp)})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for needle in ("data (dialogue): samples train", "trained on:", "plan: 6 optimizer steps", "training",
                   "validation", "tailor train", "tailor run", "memory: predicted peak"):
        assert needle in text, text
    figures = json.loads(out.read_text())
    assert figures["timed"] and figures["schedule"]["steps"] == 6
    assert figures["data"]["train_supervised_tokens"] > 0 and 0 < figures["data"]["trained_share"] < 1
    assert len(figures["timing"]["measured"]["steps"]) == 3  # 2 timed steps and the one on the longest batch
    p = figures["prediction"]
    assert p["run_total_seconds"] > p["train_total_seconds"] > p["seconds"]["training"] > 0
    assert figures["memory"]["run_peak_mb"] >= figures["memory"]["train_peak_mb"] > 0
    assert not (tmp_path / "runs").exists()  # nothing written to output_dir
    assert list(temp.iterdir()) == []  # the temporary run folder is gone


@pytest.mark.parametrize("train, needle", [({"batch_size": 0}, "batch_size"), ({"lerning_rate": 1}, "lerning_rate")])
def test_plan_bad_field_exits_2_naming_it(tiny_config, train, needle):
    result = tailor("plan", tiny_config(train=train))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("packing", [False, True])
def test_plan_steps_are_the_steps_train_runs(tiny_config, tmp_path, packing):
    # Steps from epochs, micro-batches of 2 and accumulation (not max_steps), and a validation every 2 steps;
    # packed, the steps count rows of several samples.
    cfg = tiny_config(train={"max_steps": 0, "epochs": 2 if not packing else 6, "batch_size": 2, "grad_accum": 2,
                             "eval_every": 2, "save_every": 0}, data={"packing": packing})
    out = tmp_path / "plan.json"
    assert tailor("plan", cfg, "--steps", "1", "--json", out).returncode == 0
    planned = json.loads(out.read_text())["schedule"]
    result = tailor("train", cfg)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "tiny"
    log = read_jsonl(run / "log.jsonl")
    assert json.loads((run / "train_summary.json").read_text())["train"]["steps"] == planned["steps"] > 2
    assert sum(r["split"] == "validation" for r in log) == planned["validations"] > 1
    # The run says its schedule at the start and its estimate after its first two logged steps.
    assert f"plan: {planned['steps']} optimizer steps" in result.stdout
    assert "estimate after step 2: about" in result.stdout + result.stderr
    assert result.stdout.count("data.packing:") == packing  # packed once, before the schedule is said


def test_memory_warning_names_the_settings_that_fit(tiny_config, monkeypatch, capsys, tmp_path):
    from tailor import cli

    cfg = tiny_config(train={"optimizer": "adamw"})  # fp32 moments: 8-bit ones are a lever (auto has them already)
    monkeypatch.setattr(plan, "available_memory_mb", lambda device=None: (1.0, "test"))
    assert cli.main(["plan", str(cfg)]) == 0  # too little even for the weights and optimizer state: not timed
    text = capsys.readouterr().out
    assert "not timed" in text and "WARNING" in text and "does NOT fit" in text
    assert "model.lora.rank=16" in text
    out = tmp_path / "plan.json"
    assert cli.main(["plan", str(cfg), "--steps", "1", "--force", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "WARNING" in text
    for setting in ("train.batch_size=2 train.grad_accum=2", "train.gradient_checkpointing=true", "model.lora.rank=16",
                    "train.optimizer=adamw_fp8"):
        assert setting in text, text
    figures = json.loads(out.read_text())
    assert figures["timed"] and {a["setting"] for a in figures["advice"]} >= {"model.lora.rank=16"}
    assert all(a["peak_mb"] <= figures["memory"]["peak_mb"] for a in figures["advice"])  # the reload of the kept model can be the floor
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", ["classification", "t5 translation", "lora, generating at validation"])
def test_plan_for_each_kind_of_run(case, task_config, tiny_classifier, tiny_t5, tiny_model, tmp_path):
    if case == "classification":
        cfg = task_config("classification", {"name": str(tiny_classifier)}, sentiment_data())
    elif case == "t5 translation":
        cfg = task_config("translation", {"name": str(tiny_t5)}, pairs_data())
    else:  # the best model by chrF needs the validation's generated replies: the plan times them too
        cfg = task_config("dialogue", {"name": str(tiny_model), "lora": {"rank": 4}},
                          {"source": str(ASSETS / "dialogue.jsonl")},
                          eval={"val_generate_samples": 3, "metric": "chrf", "batch_size": 4, "generate_samples": 4})
    out = tmp_path / "plan.json"
    result = tailor("plan", cfg, "--steps", "1", "--json", out)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    seconds = figures["prediction"]["seconds"]
    assert seconds["training"] > 0 and seconds["validation"] > 0
    measured = figures["timing"]["measured"]
    assert ("generate_outputs" in measured) == (case != "classification")  # a classifier generates nothing
    assert ("val_generate_outputs" in measured) == case.startswith("lora")
    assert not (tmp_path / "runs").exists()


def test_step_time_fit():
    a, b = plan.fit_step_time([(100, 0.5 + 100 * 0.01), (200, 0.5 + 200 * 0.01), (400, 0.5 + 400 * 0.01)])
    assert a == pytest.approx(0.5) and b == pytest.approx(0.01)
    # A negative fixed part (noise) falls back to time proportional to tokens.
    assert plan.fit_step_time([(100, 2.0), (200, 2.1), (400, 8.0)]) == (0.0, pytest.approx(12.1 / 700))
    assert plan.fit_step_time([(100, 1.0)]) == (0.0, 0.01)


@pytest.mark.parametrize("steps, every, expected", [(125, 50, 3), (100, 50, 2), (7, 0, 1), (1, 3, 1), (9, 3, 3)])
def test_validations_counted_as_the_loop_validates(steps, every, expected):
    validated = [s for s in range(1, steps + 1) if (every and s % every == 0) or s == steps]
    assert plan.count(steps, every) == len(validated) == expected
    sched = plan.Schedule(steps, 8, 1, steps, 1.0, 0, expected, every, 1, 0, 0)
    for step in range(1, steps + 1):
        assert sched.validations_from(step) == sum(1 for s in validated if s >= step)


def test_eta_from_the_first_logged_steps():
    said = []
    sched = plan.Schedule(100, 8, 1, 100, 1.0, 0, 2, 50, 1, 0, 0)
    eta = plan.Eta(None, sched, val_tokens=3000, step_tokens=1000, test_evaluation_seconds=60.0, say=said.append)
    eta.log({"step": 10, "split": "train"})
    eta.log({"step": 10, "split": "validation"})  # a validation in between: timed afresh
    eta.log({"step": 20, "split": "train"})
    assert said == []
    eta.log({"step": 30, "split": "train"})
    assert len(said) == 1 and "estimate after step 30" in said[0] and "70 steps" in said[0]
    line = eta.estimate(30, 2.0)  # 70 x 2 s + 2 validations x (3000 tokens at 2 s / 1000 tokens / 3) + 60 s
    assert "about 3.4 min more" in line and "2 validation(s) ~4.0 s" in line and "fine-tuned evaluation ~60 s" in line
    eta.log({"step": 40, "split": "train"})
    assert len(said) == 1  # said once
