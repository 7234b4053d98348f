"""The decoder on the lean cache returns what HF `generate` returns, with and without checking drafted tokens."""

import pytest
import torch
from transformers import GenerationConfig

from tailor import kernels
from tailor.config.decode import DecodeConfig
from tailor.config.model import LoraConfig
from tailor.errors import TailorError
from tailor.generate import lean
from tailor.generate.decoder import decode
from tailor.generate.replies import generate
from tailor.kernels import matmul
from tailor.models.load import load_model
from tailor.models.lora import wrap
from tailor.precision import half_copy

from tiny import make_causal_lm

from decode_helpers import TEXTS, bf16_kind, left_padded, lm, reference  # noqa: F401  (lm, bf16_kind: fixtures)


def greedy(tok, n=40, stops=None):
    return GenerationConfig(max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=stops)


class Counting:
    """Counts lean forwards and the drafted tokens they were given."""

    def __init__(self, monkeypatch):
        self.calls, self.widths = 0, []
        forward = lean.Lean.forward

        def counted(this, ids, start, pad):
            self.calls += 1
            self.widths.append(ids.shape[1])
            return forward(this, ids, start, pad)

        monkeypatch.setattr(lean.Lean, "forward", counted)


@pytest.mark.parametrize("dtype, bf16_kind", [("fp32", "native"), ("bf16", "native"), ("bf16", "no native bf16")],
                         indirect=["bf16_kind"])
@pytest.mark.parametrize("texts", [TEXTS, TEXTS[:1], TEXTS[2:3]], ids=["padded batch", "row 0", "row 2"])
def test_greedy_matches_hf_generate_token_for_token(lm, dtype, texts, bf16_kind):
    model, tok = lm
    model = half_copy(model) if dtype == "bf16" else model
    ids, mask = left_padded(tok, texts)
    gen = greedy(tok)
    want = reference(model).generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    got = decode(model, ids, mask, gen, use_lean=True)
    assert got.shape == (len(texts), 40)
    assert torch.equal(got, want)


def test_lookahead_checks_drafts_and_keeps_the_greedy_tokens(lm, monkeypatch):
    # fp32: in bf16 a several-row product can round an output one ulp from the one-row product.
    model, tok = lm
    ids, mask = left_padded(tok, TEXTS[2:3])
    gen = greedy(tok, 60)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[0, ids.shape[1]:].tolist()
    prompt = ids.shape[1]
    count = Counting(monkeypatch)

    def drafter(wrong_at):
        # Drafts the true continuation, but with its `wrong_at`-th token changed (None: all true).
        def draft(context, most):
            ahead = want[len(context) - prompt:][:most]
            if wrong_at is not None and wrong_at < len(ahead):
                ahead[wrong_at] = (ahead[wrong_at] + 1) % len(tok)
            return ahead
        return draft

    for wrong_at, most_calls in ((None, 12), (2, 20), (0, 59)):
        monkeypatch.setattr(lean, "lookup", drafter(wrong_at))
        count.calls = 0
        got = decode(model, ids, mask, gen, draft=4, use_lean=True)[0].tolist()
        assert got == want, wrong_at
        # Each forward keeps the draft's tokens before the wrong one, plus the model's own next token.
        assert count.calls == most_calls, wrong_at
    assert max(count.widths) == 5


def test_stop_tokens_end_rows_inside_a_kept_draft(lm):
    model, tok = lm
    ids, mask = left_padded(tok, TEXTS[:1])
    free = decode(model, ids, mask, greedy(tok, 30), use_lean=True)[0].tolist()
    stop = free[12]
    gen = greedy(tok, 30, [stop])
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    got = decode(model, ids, mask, gen, draft=4, use_lean=True)
    assert torch.equal(got, want)
    assert got[0, -1] == stop and got.shape[1] == free.index(stop) + 1


def test_padded_rows_stop_apart_and_are_padded(lm):
    model, tok = lm
    ids, mask = left_padded(tok, TEXTS[:2])
    free = decode(model, ids, mask, greedy(tok, 10), use_lean=True)
    stops = [int(free[0, 1]), int(free[1, 3])]
    gen = greedy(tok, 10, stops)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    assert torch.equal(decode(model, ids, mask, gen, use_lean=True), want)


def test_rows_without_padding_stop_apart(lm):
    model, tok = lm
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    width = min(map(len, rows))
    ids = torch.tensor([r[:width] for r in rows])
    mask = torch.ones_like(ids)
    free = decode(model, ids, mask, greedy(tok, 12), use_lean=True)
    gen = greedy(tok, 12, [int(free[0, 2])])
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, width:]
    got = decode(model, ids, mask, gen, use_lean=True)
    assert torch.equal(got, want)
    assert (got[0, 3:] == tok.pad_token_id).all()


def test_sampling_draws_what_the_plain_loop_draws(lm):
    model, tok = lm
    ids, mask = left_padded(tok, TEXTS)
    gen = GenerationConfig(max_new_tokens=20, do_sample=True, temperature=1.5, top_k=20, top_p=0.95,
                           pad_token_id=tok.pad_token_id, eos_token_id=None)
    a = decode(model, ids, mask, gen, torch.Generator().manual_seed(3), use_lean=True)
    b = decode(model, ids, mask, gen, torch.Generator().manual_seed(3), use_lean=False)
    assert torch.equal(a, b)


def test_only_plain_llama_projections_are_supported(lm):
    model, _ = lm
    assert lean.supports(model)
    adapted = wrap(half_copy(model), LoraConfig(rank=2), "causal")
    assert not lean.supports(adapted)
    assert not lean.supports(adapted.base_model.model)  # the projections are LoRA layers
    eager = half_copy(model)
    eager.config._attn_implementation = "eager"
    assert not lean.supports(eager)


def test_lookup_takes_the_latest_longest_match():
    assert lean.lookup([1, 2, 3, 4, 9, 2, 3, 5, 7, 2, 3], 2) == [5, 7]  # 2,3 last seen before 5
    assert lean.lookup([1, 2, 3, 8, 4, 2, 3, 9, 1, 2, 3], 3) == [8, 4, 2]  # 1,2,3 beats the later 2,3
    assert lean.lookup([4, 5, 6], 3) == []


def test_replies_use_lookahead_when_asked(lm, monkeypatch):
    model, tok = lm
    prompt = [tok("the cat the cat the cat", add_special_tokens=False)["input_ids"]]
    count = Counting(monkeypatch)
    plain = generate(model, tok, prompt, DecodeConfig(max_new_tokens=20, batch_size=1, lookahead=0))
    assert set(count.widths) == {1}
    count.widths = []
    ahead = generate(model, tok, prompt, DecodeConfig(max_new_tokens=20, batch_size=1, lookahead=3))
    assert max(count.widths) > 1 and ahead == plain
    with pytest.raises(TailorError, match="lookahead"):
        DecodeConfig(lookahead=-1)


def test_fused_weights_are_kept_until_the_weights_change(lm):
    model, tok = lm
    model = half_copy(model)
    first = lean.fused_layers(model)
    assert lean.fused_layers(model) is first
    ids, mask = left_padded(tok, TEXTS[:1])
    before = decode(model, ids, mask, greedy(tok, 8), use_lean=True)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(-1.0)
    assert lean.fused_layers(model) is not first
    gen = greedy(tok, 8)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    after = decode(model, ids, mask, gen, use_lean=True)
    assert torch.equal(after, want) and not torch.equal(after, before)


@pytest.mark.skipif(not kernels.supported(), reason="no AVX512-BF16 on this CPU")
def test_bf16_drafts_are_checked_as_one_token_steps(lm, tmp_path, monkeypatch):
    """bf16 with every product on the kernel (hidden 128, vocabulary padded to a multiple of 16): drafted
    tokens are checked several at a time and the reply is plain greedy's. Where a product has no way of
    rounding row by row as F.linear does, it does not draft."""
    model, tok = lm
    ids = torch.tensor([tok("the cat the cat the cat the cat", add_special_tokens=False)["input_ids"]])
    mask = torch.ones_like(ids)
    wide = load_model(str(make_causal_lm(tmp_path / "wide", hidden=128)))
    wide.resize_token_embeddings(len(tok), pad_to_multiple_of=16)
    wide = half_copy(wide)
    assert lean.drafts_exact(wide)
    gen = greedy(tok, 30)
    want = wide.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    count = Counting(monkeypatch)
    got = decode(wide, ids, mask, gen, draft=3, use_lean=True)
    assert max(count.widths) > 1 and len(count.widths) < 30
    assert torch.equal(got, want)

    with monkeypatch.context() as patch:
        patch.setattr(matmul, "way_for", lambda *shape: None)
        assert not lean.drafts_exact(wide)
        count.widths = []
        assert torch.equal(decode(wide, ids, mask, gen, draft=3, use_lean=True), want)
        assert set(count.widths) == {1}
