import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from conftest import read_jsonl
from task_fixtures import pairs_data, task_config, tiny_t5  # noqa: F401  (fixtures)
from tailor.config import load_config
from tailor.config.model import LoraConfig
from tailor.errors import TailorError
from tailor.models.freeze import apply_freezing, block_lists, head_names, parameter_counts
from tailor.models.lora import wrap
from tailor.workflow import train_job


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_embeddings_and_first_layers(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    apply_freezing(model, "embeddings", 1, 0)
    names = trainable(model)
    assert not any("embed_tokens" in n or n.startswith("model.layers.0.") for n in names)
    assert any(n.startswith("model.layers.1.") for n in names) and "model.norm.weight" in names


def test_freeze_body_of_tied_lm_keeps_only_the_head(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    apply_freezing(model, "body", 0, 0)
    trainable_count, total = parameter_counts(model)
    assert trainable_count == model.get_output_embeddings().weight.numel() < total  # tied: head = embeddings


def test_encoder_decoder_has_two_stacks_and_first_layers_apply_to_both(tiny_t5):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    assert [n for n, _ in block_lists(model)] == ["encoder.block", "decoder.block"]
    assert head_names(model) == ["lm_head"]
    apply_freezing(model, "none", 1, 0)
    assert not any(".block.0." in n for n in trainable(model))


def test_too_many_layers_is_a_clear_error(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with pytest.raises(TailorError, match="has only 2 blocks"):
        apply_freezing(model, "none", 3, 0)


def test_lora_wrap_counts_and_rejects_unknown_targets(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = wrap(model, LoraConfig(rank=4, target_modules=["all-linear"]), "causal")
    names = trainable(peft_model)
    assert names and all("lora_" in n for n in names)
    assert any("mlp" in n for n in names)  # all-linear reaches the MLP too
    with pytest.raises(TailorError, match="model.lora"):
        wrap(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(rank=4, target_modules=["nope"]), "causal")


def test_config_rejects_lora_with_freezing():
    from tailor.config import config_from_dict

    with pytest.raises(TailorError, match="LoRA"):
        config_from_dict({"model": {"lora": {"rank": 4}, "freeze": "body"}})
    with pytest.raises(TailorError, match="freeze: body"):
        config_from_dict({"model": {"train_top_layers": 2}})


def test_lora_resume_continues_exactly(task_config, tiny_model):
    """A LoRA run stopped at step 2 and resumed ends with the same adapter as an uninterrupted run."""
    model = {"name": str(tiny_model), "lora": {"rank": 4, "dropout": 0.1}}
    data = {**pairs_data(), "template": "English: {source}\nGerman:"}
    straight = load_config(task_config("translation", model, data, name="straight"))
    train_job(straight)
    interrupted = load_config(task_config("translation", model, data, name="resumed"))
    train_job(interrupted, on_validation=lambda step, metrics: step >= 2)  # stops after the step-2 checkpoint
    assert json.loads((interrupted.run_dir / "checkpoints" / "step-000002" / "state.json").read_text())["step"] == 2
    train_job(interrupted, resume=True)
    a = load_file(straight.run_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(interrupted.run_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    steps = [r["step"] for r in read_jsonl(interrupted.run_dir / "log.jsonl") if r["split"] == "train"]
    assert steps == [1, 2, 3, 4]
