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
    nll, n, _ = task.token_stats(model, task.collate(splits.train, tok.pad_token_id))
    assert n > 0 and 0 < float(nll) / n < 10  # a real model: German targets are far from uniform over 49k tokens
    hyps = get_task("translation").translate(model, tok, splits.test, cfg, False)
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)
