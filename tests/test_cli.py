import json

import pytest

from cli_process import tailor_cli
from conftest import ROOT


def tailor(*args, cwd=None):
    return tailor_cli(*args, cwd=cwd)


def assert_clean_error(result, *needles):
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_run_end_to_end_on_tiny_model(tiny_config):
    cfg = tiny_config()
    result = tailor("run", cfg)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "perplexity (response tokens)" in out and "stop rate" in out and "fine-tuned" in out
    assert out.count("[base]") == 2 and out.count("[fine-tuned]") == 2
    run = cfg.parent / "runs" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    for side in ("base", "fine_tuned"):
        assert {"perplexity", "token_accuracy", "response_tokens", "stop_rate"} <= set(metrics["test"][side])
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    # A second run of the same name refuses to clobber the first.
    again = tailor("run", cfg)
    assert_clean_error(again, "already exists", "--resume", "--overwrite")


def test_eval_command_reloads_run_from_its_folder(tiny_config):
    cfg = tiny_config(train={"max_steps": 2})
    assert tailor("train", cfg).returncode == 0
    result = tailor("eval", cfg.parent / "runs" / "tiny")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["perplexity"] > 1


def test_chat_multi_turn(tiny_config):
    cfg = tiny_config(train={"max_steps": 2})
    assert tailor("train", cfg).returncode == 0
    replies = []
    for extra in ([], ["--lookahead", "3"]):
        proc = tailor_cli("chat", cfg.parent / "runs" / "tiny", "--max-new-tokens", "12", *extra,
                          input="hello\nhow are you\n/reset\nhi\n/exit\n")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("model> ") == 3
        replies.append(proc.stdout)
    assert replies[0] == replies[1]  # lookahead checks its drafts: the same greedy replies


def test_unknown_config_key(tiny_config):
    assert_clean_error(tailor("train", tiny_config(train={"lerning_rate": 1})), "lerning_rate", "learning_rate")


def test_malformed_jsonl(tiny_config, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [\n')
    result = tailor("train", tiny_config(data={"source": str(bad)}))
    assert_clean_error(result, "bad.jsonl, line 2")
    assert not (tmp_path / "runs" / "tiny").exists()  # bad input is caught before a run folder is made


def test_wrong_schema_names_the_field(tiny_config, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "text": "hi"}]}\n')
    assert_clean_error(tailor("train", tiny_config(data={"source": str(bad)})), "line 1", "content")


def test_empty_dataset(tiny_config, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_clean_error(tailor("train", tiny_config(data={"source": str(empty)})), "no conversations")


def test_missing_model_and_data_paths(tiny_config, tmp_path):
    assert_clean_error(tailor("train", tiny_config(model={"name": str(tmp_path / "nope")})), "does not exist")
    assert_clean_error(tailor("train", tiny_config(data={"source": str(tmp_path / "nope.jsonl")})), "nope.jsonl", "does not exist")
    assert_clean_error(tailor("train", tmp_path / "missing.yaml"), "missing.yaml")


def test_sequence_longer_than_context(tiny_config):
    assert_clean_error(tailor("train", tiny_config(model={"max_length": 100000})), "context of 256")
    result = tailor("train", tiny_config(model={"max_length": 12}, data={"overlong": "error"}))
    assert_clean_error(result, "dialogue.jsonl:", "longer than model.max_length=12")


@pytest.mark.parametrize("command", ["run", "train", "eval", "chat"])
def test_every_command_has_help(command):
    result = tailor(command, "--help", cwd=ROOT)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: tailor {command} ")  # this command's own help, not the top level's
    assert "--device" in result.stdout and result.stderr == ""


def test_chat_refuses_pickled_weights(tiny_model, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    assert_clean_error(tailor("eval", folder), "no .safetensors weights")


def test_threads_option_sets_torch_threads_for_any_command(tiny_config):
    import torch

    from tailor.cli import main

    before = torch.get_num_threads()
    want = before + 1
    try:
        assert main(["--threads", str(want), "data", "check", str(tiny_config())]) == 0
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
