from pathlib import Path

import pytest
import yaml

from tiny import ASSETS, make_classifier, make_seq2seq

TASK_ASSETS = ASSETS / "tasks"


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    return make_seq2seq(tmp_path_factory.mktemp("tiny-t5"), "t5")


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    return make_classifier(tmp_path_factory.mktemp("tiny-cls"))


TRAIN = {"learning_rate": 3e-3, "batch_size": 4, "max_steps": 4, "eval_every": 2, "save_every": 2, "log_every": 1,
         "precision": "fp32", "warmup_steps": 1}


@pytest.fixture
def task_config(tmp_path):
    """write(task, model, data, **sections) -> path of a config for a tiny run under tmp_path/runs."""

    def write(task: str, model: dict, data: dict, name: str = "tiny", **sections) -> Path:
        cfg = {
            "name": name, "task": task, "output_dir": str(tmp_path / "runs"), "model": {"max_length": 64, **model},
            "data": {"val_fraction": 0.3, "test_fraction": 0.3, **data},
            "train": {**TRAIN, **sections.pop("train", {})},
            "eval": {"batch_size": 4, "generate_samples": 4, "show_samples": 2, **sections.pop("eval", {})},
            "decode": {"max_new_tokens": 6, "batch_size": 4, **sections.pop("decode", {})},
            **sections,
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


def pairs_data() -> dict:
    return {"source": {"en": str(TASK_ASSETS / "pairs.en"), "de": str(TASK_ASSETS / "pairs.de")},
            "columns": {"source": "en", "target": "de"}}


def sentiment_data() -> dict:
    return {"source": str(TASK_ASSETS / "sentiment.tsv"), "columns": {"text": "sentence"},
            "label_names": ["negative", "positive"]}
