"""The real SmolLM2-135M-Instruct as a LoRA translator (kept small: one load, two sentences)."""

import pytest
import torch

from tailor.config import load_config
from tailor.tasks import get_task

pytestmark = pytest.mark.slow


def test_real_model_lora_translator(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        "task: translation\n"
        "model: {name: smollm2-135m-instruct, max_length: 96, lora: {rank: 8}}\n"
        "data: {source: {en: ../shared/data/multi30k/val.en, de: ../shared/data/multi30k/val.de},\n"
        "       columns: {source: en, target: de}, template: \"Translate English to German.\\nEnglish: {source}\\nGerman:\",\n"
        "       max_train_samples: 2, max_val_samples: 1, max_test_samples: 2}\n"
        "decode: {max_new_tokens: 4, num_beams: 2}\n"
    )
    cfg = load_config(cfg_path)
    task = get_task("translation")
    model, tok = task.load(cfg)
    splits = task.prepare(cfg, tok, 8192)
    batch = task.collate(splits.train, tok.pad_token_id)
    with torch.no_grad():
        nll, n, _ = task.token_stats(model, batch)
        # Fresh LoRA adapters change nothing: tailor's loss on the target tokens is the model's own.
        own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert n == int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(float(nll) / n, float(own), rtol=1e-4, atol=1e-4)
    assert float(nll) / n < 6  # a real model: German targets far from uniform over 49k tokens (ln 49152 = 10.8)
    hyps = get_task("translation").translate(model, tok, splits.test, cfg, False)
    assert len(hyps) == 2 and all(h.strip() for h in hyps)
