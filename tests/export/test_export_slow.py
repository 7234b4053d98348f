"""The real SmolLM2-135M-Instruct exported to GGUF, read back by transformers: same tokens, same greedy replies."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tailor.export.gguf_file import write_gguf
from tailor.models.load import resolve

pytestmark = pytest.mark.slow

QUESTIONS = ["Hi! How was your weekend?", "What is your favourite food? I like 3 kinds of pasta."]


def test_real_model_gguf_round_trip(tmp_path):
    folder = resolve("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = write_gguf(model, tokenizer, tmp_path / "smollm2.gguf", "f16")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32)
    back_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert back_tokenizer.chat_template == tokenizer.chat_template
    for question in QUESTIONS:
        messages = [{"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert back_tokenizer(back_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)["input_ids"] == ids
        x = torch.tensor([ids])
        with torch.no_grad():
            a = model.generate(x, max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
            b = back.generate(x, max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
        assert a == b, (tokenizer.decode(a), back_tokenizer.decode(b))

