"""Shared by the decoding tests: a tiny model whose replies depend on history, and left padding.

Not a conftest.py (see tests/serve/serve_helpers.py); test modules import what they use from here.
"""

import pytest
import torch

from tailor.models.load import load_model, load_tokenizer

TEXTS = ["hello how are you", "the cat", "what do you like to do in the house", "a"]


@pytest.fixture(scope="module")
def lm(tiny_model):
    """The tiny model with large random weights, so the next token depends on positions and history
    (with the default small init, greedy replies barely depend on them and wrong positions go unseen)."""
    model = load_model(str(tiny_model))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval(), load_tokenizer(str(tiny_model))


def left_padded(tokenizer, texts):
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row)
        mask[r, width - len(row):] = 1
    return ids, mask


def reference(model):
    """The model whose `generate` the lean decoder reproduces: the model itself, or, for bf16 weights that
    decode in fp32 (a CPU without native bf16, lean.activations), an fp32 copy of those same weights."""
    from tailor.generate import lean
    from tailor.precision import half_copy

    if lean.activations(model) == torch.float32 and model.lm_head.weight.dtype == torch.bfloat16:
        return half_copy(model, torch.float32)
    return model


@pytest.fixture(params=["native", "no native bf16"])
def bf16_kind(request, monkeypatch):
    """Run a bf16 test as this CPU decodes, and as a CPU without native bf16 would (fp32 arithmetic on the
    bf16 weights, through widen.cpp where the CPU has AVX-512): both paths are tested on every machine."""
    if request.param != "native":
        from tailor import device as devices

        monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    return request.param
