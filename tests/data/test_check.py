import json

import yaml

from task_fixtures import TASK_ASSETS
from cli_process import tailor_cli


def check(cfg_path, *extra):
    return tailor_cli("data", "check", cfg_path, *extra)


def write_config(tmp_path, **cfg):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dialogue_lint_names_bad_rows(tmp_path, tiny_model):
    data = tmp_path / "chats.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    rows = [
        json.dumps(good),
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                 {"role": "assistant", "content": "c"}]}),
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}),
        '{"messages": [',
        json.dumps({"messages": [{"role": "user", "text": "no content"}]}),
        json.dumps(good),
    ]
    data.write_text("\n".join(rows) + "\n")
    cfg = write_config(tmp_path, model={"name": str(tiny_model), "max_length": 64},
                       data={"source": str(data), "val_fraction": 0.0, "test_fraction": 0.0})
    result = check(cfg, "--json", tmp_path / "report.json")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "chats.jsonl:2: messages[1] is a second user turn in a row" in out
    assert "chats.jsonl:3: messages[1] (assistant) is empty" in out
    assert "chats.jsonl, line 4: not valid JSON" in out
    assert "chats.jsonl:5:" in out and "content" in out
    assert "duplicates in train: 1 repeated record(s)" in out and "chats.jsonl:1 repeated at" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert len([f for f in report["findings"] if f["level"] == "error"]) == 4
    assert report["tokens_skipped"]


def test_classification_lint_overlap_duplicates_and_token_table(tmp_path, tiny_model):
    train = tmp_path / "train.tsv"
    test = tmp_path / "test.tsv"
    train.write_text("sentence\tlabel\ngood film\t1\nbad film\t0\ngood film\t1\nwhat a film\t0\nwhat a film\t1\n")
    test.write_text("sentence\tlabel\ngood film\t1\nlovely\t1\n")
    cfg = write_config(tmp_path, task="classification", model={"name": str(tiny_model), "max_length": 8},
                       data={"source": str(train), "validation_source": str(test), "test_source": str(test),
                             "columns": {"text": "sentence"}, "label_names": ["negative", "positive"]})
    result = check(cfg)
    assert result.returncode == 0, result.stdout + result.stderr  # warnings only
    out = result.stdout
    assert "train.tsv:6: same text as" in out and "train.tsv:5" in out  # conflicting labels
    assert "overlap train/test (text): 1 test record(s) also in train" in out
    assert "test.tsv:2 = " in out and "train.tsv:2" in out
    assert "token lengths" in out and "over" in out
    train_row = next(line for line in out.splitlines() if line.strip().startswith("train ") and "%" in line)
    assert int(train_row.split()[1]) == 5  # samples


def test_translation_lint_reports_supervised_share_and_truncation(tmp_path, tiny_model):
    cfg = write_config(tmp_path, task="translation", model={"name": str(tiny_model), "max_length": 16},
                       data={"source": {"en": str(TASK_ASSETS / "pairs.en"), "de": str(TASK_ASSETS / "pairs.de")},
                             "columns": {"source": "en", "target": "de"}, "template": "English: {source}\nGerman:",
                             "val_fraction": 0.3, "test_fraction": 0.3, "overlong": "skip"})
    result = check(cfg, "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stdout + result.stderr
    tokens = json.loads((tmp_path / "r.json").read_text())["tokens"]
    assert tokens["train"]["over_max_length"] > 0 and tokens["train"]["tokens_cut"] > 0
    assert 0 < tokens["train"]["supervised_share"] < 1
