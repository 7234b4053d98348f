import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import ASSETS, make_causal_lm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Folder of a tiny random causal LM with a ChatML tokenizer."""
    return make_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def dialogue_jsonl() -> Path:
    return ASSETS / "dialogue.jsonl"


@pytest.fixture
def tiny_config(tmp_path, tiny_model, dialogue_jsonl):
    """Write a config for the tiny model on the test dialogues; returns a function taking overrides."""
    import yaml

    def make(**sections) -> Path:
        data = {
            "name": "tiny",
            "output_dir": str(tmp_path / "runs"),
            "model": {"name": str(tiny_model), "max_length": 128},
            "data": {"source": str(dialogue_jsonl), "val_fraction": 0.2, "test_fraction": 0.2,
                     "max_val_samples": 0, "max_test_samples": 0},
            "train": {"learning_rate": 1e-3, "batch_size": 4, "max_steps": 6, "eval_every": 3,
                      "save_every": 2, "log_every": 1, "precision": "fp32", "warmup_steps": 1},
            "eval": {"batch_size": 4, "generate_samples": 4, "show_samples": 2},
            "decode": {"max_new_tokens": 8, "batch_size": 4},
        }
        for key, value in sections.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return make


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
