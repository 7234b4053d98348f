import json

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from task_fixtures import sentiment_data, task_config, tiny_classifier  # noqa: F401  (fixtures)
from test_cli import assert_clean_error, tailor
from tailor.config import load_config
from tailor.tasks import get_task


def test_new_head_on_causal_lm_body_frozen_cli_end_to_end(task_config, tiny_model):
    cfg = task_config("classification", {"name": str(tiny_model), "freeze": "body"}, sentiment_data(),
                      eval={"metric": "accuracy", "mode": "max"})
    result = tailor("run", cfg)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "trainable parameters: 64 of" in out  # the head: hidden 32 x 2 classes, no bias
    assert "confusion matrix" in out and "accuracy" in out and "macro-F1" in out
    run = cfg.parent / "runs" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    for side in ("base", "fine_tuned"):
        m = metrics["test"][side]
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
        assert m["confusion_matrix"]["labels"] == ["negative", "positive"]
        assert sum(map(sum, m["confusion_matrix"]["matrix"])) == metrics["data"]["samples"]["test"]
    # Only the head moved: the saved body equals the pretrained one.
    tuned = AutoModelForSequenceClassification.from_pretrained(run / "model")
    assert tuned.config.id2label == {0: "negative", 1: "positive"}
    base = load_file(tiny_model / "model.safetensors")
    saved = load_file(run / "model" / "model.safetensors")
    for key, value in base.items():
        if key.startswith("model."):
            assert torch.equal(saved[key], value), key
    samples = json.loads((run / "samples.json").read_text())
    assert samples[0]["label"] in ("negative", "positive") and samples[0]["fine_tuned"]["text"] in ("negative", "positive")


def test_lora_classifier_trains_adapters_and_the_head(task_config, tiny_model):
    cfg = task_config("classification", {"name": str(tiny_model), "lora": {"rank": 4}}, sentiment_data())
    result = tailor("train", cfg)
    assert result.returncode == 0, result.stderr
    run = cfg.parent / "runs" / "tiny"
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any("lora_A" in k for k in adapter) and any("score" in k for k in adapter)
    model = AutoModelForSequenceClassification.from_pretrained(run / "model")  # merged, no peft needed
    assert model.score.weight.shape == (2, 32)
    evaluated = tailor("eval", run)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "accuracy" in json.loads(evaluated.stdout[evaluated.stdout.index("{"):])


def test_existing_classifier_head_top_layers(task_config, tiny_classifier):
    cfg = load_config(task_config("classification", {"name": str(tiny_classifier), "freeze": "body", "train_top_layers": 1},
                                  sentiment_data()))
    model, tok = get_task("classification").load(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "score.weight" in trainable and "model.norm.weight" in trainable
    assert any(n.startswith("model.layers.1.") for n in trainable)
    assert not any(n.startswith("model.layers.0.") or "embed" in n for n in trainable)


def test_label_ids_and_names_and_a_bad_label(task_config, tiny_model, tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("text,label\ngood film,positive\nbad film,negative\nfine,1\nawful,meh\n")
    cfg = task_config("classification", {"name": str(tiny_model)},
                      {"source": str(data), "label_names": ["negative", "positive"], "val_fraction": 0.0, "test_fraction": 0.0,
                       "validation_source": str(data), "test_source": str(data)})
    assert_clean_error(tailor("train", cfg), "labels.csv:5", "'meh'", "negative, positive")


def test_loss_is_summed_per_text(tiny_model, task_config):
    cfg = load_config(task_config("classification", {"name": str(tiny_model)}, sentiment_data()))
    task = get_task("classification")
    model, tok = task.load(cfg)
    splits = task.prepare(cfg, tok, 1 << 20)
    batch = task.collate(splits.train[:4], tok.pad_token_id)
    nll, n, correct = task.token_stats(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(nll, torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
    assert n == task.count_targets(batch) == 4 and 0 <= correct <= 4
