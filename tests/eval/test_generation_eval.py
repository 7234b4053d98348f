"""Generation metrics at every validation, on a fixed validation sample, can pick the best checkpoint."""

import json

import pytest

from conftest import read_jsonl
from tailor.config import config_from_dict, load_config
from tailor.errors import TailorError
from tailor.eval.dialogue import fixed_sample
from tailor.workflow import train_job


def test_best_checkpoint_by_chrf_with_its_direction(tiny_config):
    cfg = load_config(tiny_config(
        train={"max_steps": 6, "eval_every": 2, "learning_rate": 3e-3},
        eval={"metric": "chrf", "val_generate_samples": 3},
        decode={"max_new_tokens": 6, "batch_size": 2},
    ))
    assert cfg.eval.mode == "max"  # auto: higher chrF is better
    train_job(cfg)
    val = [r for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "validation"]
    assert [r["step"] for r in val] == [2, 4, 6]
    for r in val:
        assert {"chrf", "bleu", "rougeL", "unigram_f1", "distinct_2", "stop_rate", "loss"} <= set(r)
    best = max(val, key=lambda r: (r["chrf"], -r["step"]))  # the first of equal values is kept
    kept = json.loads((cfg.run_dir / "model" / "metrics.json").read_text())
    assert kept["step"] == best["step"]
    assert kept["validation"]["chrf"] == pytest.approx(best["chrf"])


def test_generation_metric_needs_a_validation_sample():
    with pytest.raises(TailorError, match="val_generate_samples"):
        config_from_dict({"eval": {"metric": "chrf"}})


def test_auto_mode_knows_directions_and_asks_for_unknown_metrics():
    assert config_from_dict({"eval": {"metric": "perplexity"}}).eval.mode == "min"
    assert config_from_dict({"eval": {"metric": "repetition_rate", "val_generate_samples": 2}}).eval.mode == "min"
    assert config_from_dict({"eval": {"metric": "token_accuracy"}}).eval.mode == "max"
    assert config_from_dict({"eval": {"metric": "perplexity", "mode": "max"}}).eval.mode == "max"
    with pytest.raises(TailorError, match="eval.mode"):
        config_from_dict({"eval": {"metric": "my_metric"}})


def test_fixed_sample_is_stable_and_spread():
    samples = [{"i": i} for i in range(100)]
    a, b = fixed_sample(samples, 10), fixed_sample(list(samples), 10)
    assert a == b and len(a) == 10
    assert a != samples[:10]
    assert fixed_sample(samples[:5], 10) == samples[:5]
