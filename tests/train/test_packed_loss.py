"""A packed batch trains exactly as its samples unpacked: same summed loss, target count and gradients."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import tailor.kernels.attention as attention
import tailor.train.loss as loss
from tailor.data.batches import collate
from tailor.data.packing import pack
from tailor.train.loss import token_stats
from tiny import CAUSAL, make_family

LENGTHS = [9, 5, 12, 3, 7, 6, 11, 4, 14, 2]


def samples(vocab: int = 500) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in LENGTHS:
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        prompt = int(torch.randint(1, n, (1,), generator=g))
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    nll, n, correct = token_stats(model, batch)
    nll.backward()
    return float(nll.detach()), n, correct, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def assert_same(got, want):
    assert got[1] == want[1] and got[2] == want[2]  # targets, and how many the argmax got right
    assert got[0] == pytest.approx(want[0], rel=1e-6)
    assert got[3].keys() == want[3].keys()
    for name, grad in want[3].items():
        # Rows laid out differently sum a weight's gradient over positions in another order: fp32 rounding only.
        torch.testing.assert_close(got[3][name], grad, rtol=1e-5, atol=1e-5 * float(grad.abs().max()),
                                   msg=lambda m, name=name: f"{name}: {m}")


def packed_and_unpacked(model, vocab: int = 500):
    data = samples(vocab)
    rows = pack(data, 20)
    assert len(rows) < len(data) and any(len(r["segments"]) > 2 for r in rows)
    return loss_and_grads(model, collate(rows, 0)), loss_and_grads(model, collate(data, 0))


def test_packed_equals_unpacked_through_the_grouped_attention(tiny_model, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa", dtype=torch.float32)
    calls = []
    original = attention.grouped_attention

    def counted(*args, **kwargs):
        calls.append(args[4] is not None and args[4].dtype == torch.bool)  # the mask it was given
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "grouped_attention", counted)
    monkeypatch.setitem(attention.AttentionInterface._global_mapping, attention.NAME, counted)
    packed, unpacked = packed_and_unpacked(model)
    assert calls and all(calls)  # training's CPU attention ran, with a mask, for both
    assert_same(packed, unpacked)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_equals_unpacked_on_transformers_attention(tiny_model, monkeypatch, implementation):
    # transformers' own attention, as where grouped attention does not apply (GPUs, gradient checkpointing)
    monkeypatch.setattr(loss, "grouped", lambda backbone: torch.enable_grad())
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=implementation, dtype=torch.float32)
    packed, unpacked = packed_and_unpacked(model)
    assert_same(packed, unpacked)


def test_position_ids_alone_let_packed_samples_see_each_other(tiny_model, monkeypatch):
    """Without the block-diagonal mask, only the padding mask and position ids that restart: the test above fails."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa", dtype=torch.float32)
    monkeypatch.setattr(loss, "packed_mask", lambda backbone, position_ids: torch.ones_like(position_ids))
    packed, unpacked = packed_and_unpacked(model)
    assert packed[1] == unpacked[1]
    assert packed[0] != pytest.approx(unpacked[0], rel=1e-4)
    with pytest.raises(AssertionError):
        assert_same(packed, unpacked)


@pytest.mark.parametrize("family", [f for f in CAUSAL if f != "llama"])
def test_packed_equals_unpacked_for_every_causal_family(tmp_path, family):
    model = AutoModelForCausalLM.from_pretrained(make_family(tmp_path, family), dtype=torch.float32)
    packed, unpacked = packed_and_unpacked(model, vocab=model.config.vocab_size)
    assert_same(packed, unpacked)
