import pytest
import yaml

from tailor.config import config_from_dict, load_config
from tailor.errors import TailorError


def test_unknown_key_names_valid_keys_and_closest():
    with pytest.raises(TailorError) as e:
        config_from_dict({"train": {"learnig_rate": 1e-4}})
    msg = str(e.value)
    assert "learnig_rate" in msg and "Did you mean 'learning_rate'" in msg and "batch_size" in msg


def test_unknown_top_level_section():
    with pytest.raises(TailorError, match="Did you mean 'train'"):
        config_from_dict({"trian": {}})


def test_types_are_checked_and_scientific_strings_accepted():
    assert config_from_dict({"train": {"learning_rate": "3e-4"}}).train.learning_rate == 3e-4
    with pytest.raises(TailorError, match="batch_size: expected int"):
        config_from_dict({"train": {"batch_size": "eight"}})
    with pytest.raises(TailorError, match="schedule"):
        config_from_dict({"train": {"schedule": "exponential"}})


def test_validation_in_post_init():
    with pytest.raises(TailorError, match="batch_size must be at least 1"):
        config_from_dict({"train": {"batch_size": 0}})


def test_yaml_file_overrides_and_name(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  batch_size: 4\n")
    cfg = load_config(path, ["train.batch_size=2", "model.max_length=64"])
    assert cfg.name == "exp" and cfg.train.batch_size == 2 and cfg.model.max_length == 64


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: [1,\n")
    with pytest.raises(TailorError, match=r"bad.yaml, line 3: not valid YAML"):
        load_config(path)


def test_shipped_presets_load():
    from pathlib import Path

    presets = sorted(Path(__file__).resolve().parents[1].glob("configs/**/*.yaml"))
    assert len(presets) >= 5
    for preset in presets:
        cfg = load_config(preset)
        assert cfg.task == preset.parent.name and cfg.name == preset.stem  # configs/<task>/<name>.yaml


@pytest.mark.parametrize("section, key, value, needle", [
    ("train", "max_grad_norm", -1, "max_grad_norm must be in [0, inf)"),
    ("train", "learning_rate", float("nan"), "expected a finite number"),
    ("train", "learning_rate", ".nan", "expected a finite number"),
    ("train", "epochs", float("inf"), "expected a finite number"),
    ("train", "log_every", 0, "log_every must be in [1,"),
    ("train", "betas", [0.9, 1.5], "betas[1] must be in [0, 1)"),
    ("train", "betas", [0.9], "betas must be two numbers"),
    ("train", "weight_decay", -0.1, "weight_decay must be in [0, 1]"),
    ("train", "warmup_ratio", 2, "warmup_ratio must be in [0, 1]"),
    ("train", "patience", -1, "patience must be in [0,"),
    ("train", "threads", -2, "threads must be in [0, 4096]"),
    ("train", "seed", -1, "seed must be in [0,"),
    ("train", "max_steps", 10**12, "max_steps must be in [0,"),
    ("data", "max_train_samples", -5, "max_train_samples must be in [0,"),
    ("model", "max_length", 10**12, "max_length must be in [8,"),
    ("decode", "temperature", float("inf"), "expected a finite number"),
    ("decode", "length_penalty", float("nan"), "expected a finite number"),
    ("eval", "batch_size", 10**9, "batch_size must be in [1,"),
    ("search", "timeout", float("inf"), "expected a finite number"),
])
def test_every_number_is_range_checked(tmp_path, section, key, value, needle):
    path = tmp_path / "c.yaml"
    text = f"{section}:\n  {key}: {value}\n" if isinstance(value, str) else yaml.safe_dump({section: {key: value}})
    path.write_text(text)
    with pytest.raises(TailorError) as e:
        load_config(path)
    assert needle in str(e.value) and "c.yaml" in str(e.value) and f"{section}" in str(e.value), str(e.value)


def test_new_train_settings_are_kept():
    cfg = config_from_dict({"train": {"device": "cpu", "gradient_checkpointing": True, "cpu_fast_paths": False,
                                      "precision": "fp16"}})
    assert (cfg.train.device, cfg.train.gradient_checkpointing, cfg.train.cpu_fast_paths, cfg.train.precision) == (
        "cpu", True, False, "fp16")


def test_model_as_a_bare_string_is_its_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: my-model\n")
    cfg = load_config(path, ["model.max_length=64"])
    assert cfg.model.name == "my-model" and cfg.model.max_length == 64
    assert config_from_dict({"model": "other"}).model.name == "other"
    assert load_config(path, ["model=third"]).model.name == "third"


def test_yaml_that_python_cannot_build_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    for text, needle in [("name: 2024-13-45\n", "not valid YAML"), ("a: " + "[" * 5000 + "\n", "not valid YAML"),
                         ('name: "\\ud800"\n', "lone surrogate"), ("- 1\n", "must be a mapping")]:
        path.write_text(text)
        with pytest.raises(TailorError, match="c.yaml"):
            try:
                load_config(path)
            except TailorError as e:
                assert needle in str(e), str(e)
                raise
