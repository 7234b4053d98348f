"""Scoring in bf16 runs on a bf16 copy of the weights and leaves the model as it was."""

import torch

from tailor.eval.score import score
from tailor.models.load import load_model
from tailor.precision import half_copy, inference_model


def samples(n=6):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randint(0, 200, (8 + 3 * i,), generator=g).tolist()
        labels = [-100] * 5 + ids[5:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def test_bf16_scores_are_those_of_the_half_copy_and_close_to_fp32(tiny_model):
    model = load_model(str(tiny_model)).train()
    data = samples()
    fp32 = score(model, data, pad_id=0, batch_size=4)
    bf16 = score(model, data, pad_id=0, batch_size=4, bf16=True)
    copy = score(half_copy(model), data, pad_id=0, batch_size=4)
    assert bf16 == copy
    assert bf16["tokens"] == fp32["tokens"] == sum(len(s["input_ids"]) - 5 for s in data)
    assert abs(bf16["loss"] - fp32["loss"]) < 0.02 * fp32["loss"]
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())


def test_inference_model_copies_only_fp32_weights_for_bf16(tiny_model):
    model = load_model(str(tiny_model))
    assert inference_model(model, bf16=False) is model
    copy = inference_model(model, bf16=True)
    assert copy is not model and next(copy.parameters()).dtype == torch.bfloat16
    assert inference_model(copy, bf16=True) is copy
