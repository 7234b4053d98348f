"""Evaluation on any data: `tailor eval RUN --data FILE` and `tailor compare A B --data FILE` score every record
of a file in the task's format, read and checked by the task's own reader, instead of the run's test split."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import ASSETS
from task_fixtures import tiny_classifier  # noqa: F401  (fixture)
from tailor import api
from tailor.cli import main
from tailor.tasks import classification, dialogue


def model_with_config(source, folder, **cfg):
    """A model folder carrying a tailor.yaml, as a run's model/ or an exported folder does."""
    shutil.copytree(source, folder)
    (folder / "tailor.yaml").write_text(yaml.safe_dump({"name": folder.name, "model": {"name": str(source)}, **cfg}))
    return folder


def spy(monkeypatch, module) -> list:
    """The samples each call of module.evaluate scored."""
    seen, real = [], module.evaluate
    monkeypatch.setattr(module, "evaluate", lambda model, tok, samples, *a, **k: seen.append(samples) or real(model, tok, samples, *a, **k))
    return seen


@pytest.fixture
def chat_model(tiny_model, tmp_path):
    return model_with_config(tiny_model, tmp_path / "chat", model={"name": str(tiny_model), "max_length": 128},
                             data={"source": str(ASSETS / "dialogue.jsonl"), "max_test_samples": 2},
                             eval={"batch_size": 4, "generate_samples": 2}, decode={"max_new_tokens": 4, "batch_size": 4})


def test_dialogue_eval_scores_every_conversation_of_the_file(chat_model, tmp_path, monkeypatch, capsys):
    lines = (ASSETS / "dialogue.jsonl").read_text().splitlines()[:3]  # 2 + 3 + 2 assistant turns with history
    data = tmp_path / "held-out.jsonl"
    data.write_text("\n".join(lines) + "\n")
    seen = spy(monkeypatch, dialogue)
    assert main(["eval", str(chat_model), "--data", str(data)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert len(seen) == 1 and len(seen[0]) == 7  # the whole file, not the run's split cap (max_test_samples: 2)
    replies = [m["content"] for line in lines for m in json.loads(line)["messages"][1:] if m["role"] == "assistant"]
    assert sorted(s["messages"][-1]["content"] for s in seen[0]) == sorted(replies)
    assert metrics["perplexity"] > 1 and metrics["tokens"] == sum(
        sum(1 for x in s["labels"] if x != -100) for s in seen[0])
    assert api.evaluate(chat_model)["tokens"] != metrics["tokens"]  # without --data: the run's own test split


def test_a_bad_data_file_is_named_with_its_line(chat_model, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text((ASSETS / "dialogue.jsonl").read_text().splitlines()[0] + "\n{\"messages\": [oops]}\n")
    assert main(["eval", str(chat_model), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "line 2" in err and "Traceback" not in err
    assert main(["eval", str(chat_model), "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["eval", str(chat_model), "--data", str(data), "--split", "validation"]) == 2
    assert "--split" in capsys.readouterr().err


@pytest.fixture
def sentiment_model(tiny_classifier, tmp_path):  # noqa: F811
    # label_names left empty: training took the classes from its data; the model's head keeps them
    return model_with_config(tiny_classifier, tmp_path / "sentiment", task="classification",
                             model={"name": str(tiny_classifier), "max_length": 64},
                             data={"source": str(ASSETS / "tasks" / "sentiment.tsv"), "columns": {"text": "sentence"}},
                             eval={"batch_size": 4})


def test_classification_eval_reads_labels_as_the_models_classes(sentiment_model, tmp_path, monkeypatch, capsys):
    data = tmp_path / "positive-only.csv"  # one class only, by name: the file alone could not say what it is
    data.write_text("sentence,label\na warm and funny film,positive\nwonderful acting,positive\nI loved it,positive\n")
    seen = spy(monkeypatch, classification)
    assert main(["eval", str(sentiment_model), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{"):])  # after the confusion matrix the task prints
    assert len(seen[0]) == 3 and [s["label_name"] for s in seen[0]] == ["positive"] * 3
    assert metrics["confusion_matrix"]["labels"] == ["negative", "positive"]
    assert [sum(row) for row in metrics["confusion_matrix"]["matrix"]] == [0, 3]  # every row is a positive text


def test_classification_bad_label_names_file_and_line(sentiment_model, tmp_path, capsys):
    data = tmp_path / "labels.csv"
    data.write_text("sentence,label\ngood film,positive\nawful,meh\n")
    assert main(["eval", str(sentiment_model), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "labels.csv" in err and "3" in err and "'meh'" in err and "negative, positive" in err


def test_compare_takes_data_the_same_way(chat_model, tiny_model, tmp_path):
    data = tmp_path / "held-out.jsonl"
    data.write_text("\n".join((ASSETS / "dialogue.jsonl").read_text().splitlines()[3:6]) + "\n")
    from tailor.commands.compare import compare

    result = compare(str(tiny_model), str(chat_model), ["decode.max_new_tokens=3"], data=str(data), samples=4,
                     bootstrap=20)
    assert result["prompts"] == str(data) and result["samples"] == 4
    assert result["metrics"]["perplexity"]["a"] == pytest.approx(result["metrics"]["perplexity"]["b"])  # same weights
    with pytest.raises(Exception, match="give one of them"):
        compare(str(tiny_model), str(chat_model), [], file=str(data), data=str(data))
