"""The full-data presets (configs/<task>/*-full.yaml) load and run their first training steps.

Each preset is taken as it is (its data files, splits, schedule, batch size, decoding), with a tiny random
model of the same family (a Llama causal LM, as SmolLM2-135M is) and a handful of rows in place of the
multi-hour run, through the Python API as a user would call it."""

import json
from pathlib import Path

import pytest

from tailor import api
from tailor.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["translation/smollm2-multi30k-full", "classification/smollm2-sst2-full", "dialogue/smollm2-chitchat-full"]


@pytest.mark.parametrize("preset", PRESETS)
def test_full_preset_loads_and_runs_its_first_steps(preset, tiny_model, tmp_path, monkeypatch):
    path = ROOT / "configs" / f"{preset}.yaml"
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.data.max_train_samples == 0 and cfg.train.epochs > 1  # the whole set, longer
    header = path.read_text().split("\nname:", 1)[0]
    assert f"tailor run configs/{preset}.yaml" in header and "multi-hour CPU run" in header
    assert "NOT yet confirmed by `tailor search`" in header

    monkeypatch.chdir(ROOT)  # the presets name their data as ../shared/data/... from the project root
    rows = 2 * cfg.train.batch_size
    run = api.train(path, **{"name": "first-steps", "output_dir": str(tmp_path / "runs"), "model.name": str(tiny_model),
                             "data.max_train_samples": rows, "data.max_val_samples": 4, "data.max_test_samples": 4,
                             "train.max_steps": 2, "train.eval_every": 2, "train.save_every": 2, "train.log_every": 1,
                             "train.precision": "fp32"})
    assert run == tmp_path / "runs" / "first-steps"
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s and "lr" in s][:2] == [1, 2]
    assert (run / "model" / "config.json").is_file() and (run / "config.yaml").is_file()
    resolved = load_config(run / "config.yaml")
    assert (resolved.train.learning_rate, resolved.train.schedule, resolved.decode.num_beams) == \
           (cfg.train.learning_rate, cfg.train.schedule, cfg.decode.num_beams)  # the preset's own settings ran
