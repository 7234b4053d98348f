import pytest

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
    with pytest.raises(TailorError, match=r"bad.yaml, line \d+"):
        load_config(path)


def test_shipped_presets_load():
    from pathlib import Path

    for preset in sorted(Path(__file__).resolve().parents[1].glob("configs/**/*.yaml")):
        load_config(preset)
