"""Dialogue files in the formats people have (ShareGPT, Alpaca, OpenAI messages): read, converted with
`tailor data convert`, and trained on."""

import json

from conftest import read_jsonl
from tailor.cli import main as cli
from tailor.config import load_config
from tailor.workflow import train_job

OPENAI = [json.loads(line) for line in open(__import__("tiny").ASSETS / "dialogue.jsonl", encoding="utf-8") if line.strip()]


def sharegpt(conv: dict) -> dict:
    speaker = {"user": "human", "assistant": "gpt", "system": "system"}
    return {"id": conv.get("id"), "conversations": [{"from": speaker[m["role"]], "value": m["content"]}
                                                    for m in conv["messages"]]}


def alpaca(conv: dict) -> dict:
    user, reply = conv["messages"][0]["content"], conv["messages"][1]["content"]
    return {"instruction": user, "input": "", "output": reply}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_sharegpt_converts_to_the_same_messages_and_trains(tmp_path, tiny_config):
    source = write(tmp_path / "share.jsonl", [sharegpt(c) for c in OPENAI])
    out = tmp_path / "messages.jsonl"
    assert cli(["data", "convert", str(source), str(out)]) == 0
    converted = read_jsonl(out)
    assert [c["messages"] for c in converted] == [c["messages"] for c in OPENAI]
    cfg = load_config(tiny_config(data={"source": str(source)}, train={"max_steps": 2, "eval_every": 2}))
    assert train_job(cfg)["train"]["steps"] == 2
    assert cli(["data", "convert", str(source), str(out)]) == 2  # never replaces a file without --overwrite


def test_alpaca_rows_become_one_user_turn_and_its_reply(tmp_path):
    rows = [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "system": "Be brief."},
            {"instruction": "Say hi.", "output": "Hi!"}]
    out = tmp_path / "out.jsonl"
    assert cli(["data", "convert", str(write(tmp_path / "alpaca.jsonl", rows)), str(out), "--format", "alpaca"]) == 0
    got = [c["messages"] for c in read_jsonl(out)]
    assert got[0] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
                      {"role": "assistant", "content": "5"}]
    assert got[1] == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]


def test_a_bad_sharegpt_turn_is_named_with_its_line(tmp_path, capsys):
    rows = [sharegpt(OPENAI[0]), {"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "x"}]}]
    assert cli(["data", "convert", str(write(tmp_path / "bad.jsonl", rows)), str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl, line 2" in err and "robot" in err and ".." not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_saved_dataset_folder_of_alpaca_rows_trains(tmp_path, tiny_config):
    import datasets

    rows = [alpaca(c) for c in OPENAI]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    cfg = load_config(tiny_config(data={"source": str(tmp_path / "saved")}, train={"max_steps": 2, "eval_every": 2}))
    assert train_job(cfg)["train"]["steps"] == 2


def test_a_hub_dataset_without_network_says_so(tmp_path, tiny_config, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # The libraries read these once at import; in a suite that imported them earlier the variables alone
    # leave them online, and the test then waits out the hub's retries (23 s) before the same message.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    path = tiny_config(data={"source": "hf:someone/no-such-dialogues"})
    assert cli(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "hf:someone/no-such-dialogues" in err and "needs network access" in err
    assert not load_config(path).run_dir.exists()
