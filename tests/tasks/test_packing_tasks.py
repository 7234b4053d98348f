"""data.packing: the training loop takes decoder-only dialogue, translation and prompt/completion samples as
packed rows (task.train_rows) and counts its steps in them; encoder-decoders and classifiers keep one sample a
row; prepare's splits stay samples."""

import math

import pytest

from conftest import read_jsonl
from task_fixtures import TASK_ASSETS, pairs_data, sentiment_data, task_config, tiny_classifier, tiny_t5  # noqa: F401
from tailor.config import load_config
from tailor.tasks import get_task
from tailor.workflow import setup, train_job


def rows_of(path, packing):
    cfg = load_config(path, [f"data.packing={str(packing).lower()}"])
    task = get_task(cfg.task)
    splits = setup(cfg, task)[2]
    assert not any("segments" in s for s in splits.train)  # prepare gives samples either way
    return splits.train, task.train_rows(cfg, splits.train)


@pytest.mark.parametrize("task", ["dialogue", "translation", "text"])
def test_decoder_only_training_samples_are_packed(task_config, tiny_model, task):
    data = {"dialogue": {"source": str(TASK_ASSETS.parent / "dialogue.jsonl")}, "translation": pairs_data(),
            "text": {"source": str(TASK_ASSETS / "prompts.jsonl")}}[task]
    path = task_config(task, {"name": str(tiny_model), "max_length": 128}, data)
    samples, rows = rows_of(path, True)
    assert all("segments" in r for r in rows) and len(rows) < len(samples)
    assert sum(len(r["segments"]) for r in rows) == len(samples)
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(s["input_ids"]) for s in samples)
    assert all(len(r["input_ids"]) <= 128 for r in rows)
    assert rows_of(path, False)[1] == samples


def test_encoder_decoders_and_classifiers_are_not_packed(task_config, tiny_t5, tiny_classifier):
    for path in (task_config("translation", {"name": str(tiny_t5)}, pairs_data()),
                 task_config("classification", {"name": str(tiny_classifier)}, sentiment_data())):
        samples, rows = rows_of(path, True)
        assert rows == samples


def test_raw_text_cut_into_full_rows_is_left_as_it_is(task_config, tiny_model):
    path = task_config("text", {"name": str(tiny_model)}, {"source": str(TASK_ASSETS / "corpus.txt")})
    samples, rows = rows_of(path, True)
    assert rows == samples


def test_the_loop_counts_steps_in_packed_rows(tiny_config):
    steps = {}
    for packing in (True, False):
        cfg = load_config(tiny_config(name=f"packed-{packing}", train={"max_steps": 0, "epochs": 1, "batch_size": 2,
                                                                     "eval_every": 0, "save_every": 0}),
                          [f"data.packing={str(packing).lower()}"])
        task = get_task(cfg.task)
        rows = len(task.train_rows(cfg, setup(cfg, task)[2].train))
        summary = train_job(cfg)
        assert summary["train"]["steps"] == math.ceil(rows / 2)
        log = [r for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "train"]
        assert len(log) == summary["train"]["steps"] and math.isfinite(log[-1]["loss"])
        steps[packing] = summary["train"]["steps"]
    assert steps[True] < steps[False]
