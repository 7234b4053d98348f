"""The one run-folder reader (tailor.runs): every command opens runs through it, pickled weights are refused on
each path, a model folder without a run still loads, and a config from another tailor version still serves."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tailor import runs
from tailor.cli import main
from tailor.config.decode import DecodeConfig
from tailor.errors import TailorError
from tailor.models.load import load_model


def pickled_run(tiny_model, root):
    """runs/tiny/ whose model/ holds the tiny model as pytorch_model.bin only, with its tailor.yaml."""
    folder = root / "runs" / "tiny" / "model"
    shutil.copytree(tiny_model, folder)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "tailor.yaml").write_text(yaml.safe_dump({"name": "tiny", "model": {"name": str(tiny_model)}}))
    return folder.parent


def never_serve(*args, **kwargs):
    raise AssertionError("tailor serve got past loading pickled weights")


@pytest.mark.parametrize("command", [
    ["eval"], ["eval", "--data", "unused.jsonl"], ["generate", "--prompt", "hi"], ["chat"], ["serve"],
    ["export", "--merged", "OUT"], ["compare", "smollm2-135m-instruct"],
])
def test_pickled_weights_are_refused_by_every_command(command, tiny_model, tmp_path, monkeypatch, capsys):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", never_serve)
    run = pickled_run(tiny_model, tmp_path)
    name, *rest = command
    rest = [str(tmp_path / "out") if a == "OUT" else a for a in rest]
    argv = [name, str(run), *rest]  # compare: the run is A, loaded first
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no .safetensors weights" in err and "pytorch_model.bin" in err and str(run / "model") in err


def test_the_model_loader_refuses_pickled_weights_outside_a_run_too(tiny_model, tmp_path):
    run = pickled_run(tiny_model, tmp_path)
    with pytest.raises(TailorError, match="could not load model"):
        load_model(str(run / "model"))  # what training reads a base model with: use_safetensors=True


def test_a_model_folder_without_a_run_loads(tiny_model):
    loaded = runs.load(tiny_model)
    assert loaded.kind == "generate" and loaded.folder == tiny_model and not loaded.is_run
    assert loaded.settings is None and loaded.cfg.model.name == str(tiny_model)  # defaults, for this model
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and not loaded.model.training
    assert loaded.tokenizer.chat_template


def test_a_run_folder_reads_its_config_once_for_every_command(tiny_model, tmp_path):
    folder = tmp_path / "runs" / "mine" / "model"
    shutil.copytree(tiny_model, folder)
    (folder.parent / "config.yaml").write_text(yaml.safe_dump(
        {"name": "mine", "data": {"system_prompt": "Be brief."}, "decode": {"max_new_tokens": 7}}))
    loaded = runs.load(folder.parent)
    assert loaded.name == "mine" and loaded.folder == folder and loaded.is_run
    assert loaded.cfg.decode.max_new_tokens == 7 and "Be brief." in loaded.config_yaml

    from tailor.serve.app import run_settings

    decode, system = run_settings(loaded)
    assert decode.max_new_tokens == 7 and system == "Be brief."


def test_a_config_from_another_tailor_version_serves_but_does_not_evaluate(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "tailor.yaml").write_text(yaml.safe_dump(
        {"name": "old", "future_section": {"x": 1}, "data": {"system_prompt": "Be brief.", "future_key": 2},
         "decode": {"max_new_tokens": 9, "top_p": 7}}))
    with pytest.raises(TailorError, match=r"tailor\.yaml.*unknown key"):
        runs.load(folder)  # eval, generate, chat and compare need the run's settings exactly
    loaded = runs.load(folder, strict=False)  # serve, export and doctor keep what this version reads
    assert loaded.cfg.data.system_prompt == "Be brief." and loaded.cfg.decode.max_new_tokens == 9
    assert loaded.cfg.decode.top_p == DecodeConfig().top_p  # out of range: its default


def test_a_folder_that_is_neither_run_nor_model_is_named(tmp_path):
    with pytest.raises(TailorError, match="neither a run folder"):
        runs.load(tmp_path)
    with pytest.raises(TailorError, match="does not exist"):
        runs.load(tmp_path / "nope")
