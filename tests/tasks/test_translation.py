import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from task_fixtures import pairs_data, task_config, tiny_t5  # noqa: F401  (fixtures)
from test_cli import assert_clean_error, tailor
from tiny import make_seq2seq
from tailor.config import load_config
from tailor.data.tokenize import IGNORE
from tailor.tasks import get_task, translation


def test_seq2seq_cli_end_to_end_reports_bleu_and_chrf_with_signatures(task_config, tiny_t5):
    cfg = task_config("translation", {"name": str(tiny_t5)}, pairs_data(), decode={"num_beams": 2})
    result = tailor("run", cfg)
    assert result.returncode == 0, result.stderr
    assert "BLEU" in result.stdout and "chrF" in result.stdout and "nrefs:1|case:mixed" in result.stdout
    run = cfg.parent / "runs" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    for side in ("base", "fine_tuned"):
        m = metrics["test"][side]
        assert 0 <= m["bleu"] <= 100 and 0 <= m["chrf"] <= 100
        assert m["bleu_signature"].startswith("nrefs:1") and "beam" in m["decoding"]
    assert metrics["data"]["model_kind"] == "seq2seq"
    samples = json.loads((run / "samples.json").read_text())
    assert samples[0]["target"] and isinstance(samples[0]["fine_tuned"]["text"], str)
    # model/ is a plain encoder-decoder folder, and `tailor eval` reloads it as one.
    AutoModelForSeq2SeqLM.from_pretrained(run / "model")
    evaluated = tailor("eval", run)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "bleu" in evaluated.stdout


def test_decoder_only_lora_saves_adapter_and_merged_model(task_config, tiny_model):
    cfg = task_config("translation", {"name": str(tiny_model), "lora": {"rank": 4, "alpha": 8}},
                      {**pairs_data(), "template": "English: {source}\nGerman:"})
    result = tailor("train", cfg)
    assert result.returncode == 0, result.stderr
    assert "trainable parameters:" in result.stdout
    run = cfg.parent / "runs" / "tiny"
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    merged = load_file(run / "model" / "model.safetensors")
    assert not any("lora" in k for k in merged)  # merged: loads without peft
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters()) if not torch.equal(p, q)]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)


def test_causal_pair_supervises_target_and_end_only(tiny_model, tmp_path):
    from tailor.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    cfg = load_config(write_min(tmp_path, tiny_model))
    sample = translation.encode(cfg, tok, {"source": "A dog.", "target": "Ein Hund.", "origin": "x:1"})
    supervised = [t for t, l in zip(sample["input_ids"], sample["labels"]) if l != IGNORE]
    assert tok.decode(supervised) == " Ein Hund." + tok.eos_token
    assert tok.decode([t for t, l in zip(sample["input_ids"], sample["labels"]) if l == IGNORE]) == "English: A dog.\nGerman:"


def write_min(tmp_path, model):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"task": "translation", "model": {"name": str(model)},
                                    "data": {**pairs_data(), "template": "English: {source}\nGerman:"}}))
    return path


@pytest.mark.parametrize("family", ["t5", "bart", "marian"])
def test_seq2seq_families_loss_matches_the_models_own(family, tmp_path, task_config):
    folder = make_seq2seq(tmp_path / family, family)
    cfg = load_config(task_config("translation", {"name": str(folder)}, pairs_data()))
    task = get_task("translation")
    model, tok = task.load(cfg)
    splits = task.prepare(cfg, tok, 1 << 20)
    batch = task.collate(splits.train[:3], tok.pad_token_id)
    nll, n, _ = task.token_stats(model, batch)
    assert n == task.count_targets(batch) == sum(len(s["labels"]) for s in splits.train[:3])
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                decoder_attention_mask=batch["decoder_attention_mask"]).loss
    torch.testing.assert_close(nll / n, own, rtol=1e-4, atol=1e-4)
    hyps = translation.translate(model, tok, splits.test[:2], cfg, False)
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)


def test_template_with_unknown_placeholder_is_a_clean_error(task_config, tiny_model):
    cfg = task_config("translation", {"name": str(tiny_model)}, {**pairs_data(), "template": "Translate {text}"})
    assert_clean_error(tailor("train", cfg), "data.template", "{text}", "{source}")


def test_parallel_files_of_different_length_are_named(task_config, tiny_model, tmp_path):
    short = tmp_path / "short.de"
    short.write_text("Ein Hund.\n")
    data = pairs_data()
    data["source"]["de"] = str(short)
    assert_clean_error(tailor("train", task_config("translation", {"name": str(tiny_model)}, data)), "short.de has 1", "pairs.en has 16")
