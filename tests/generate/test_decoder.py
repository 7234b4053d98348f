"""The fast decoding path returns what HF `generate` returns, and covers only what it implements."""

import pytest
import torch
from transformers import GenerationConfig

from tailor.config.decode import DecodeConfig
from tailor.generate.fast import decode, pick, supports
from tailor.generate.replies import finish_reply, generate, generation_config, stop_ids
from tailor.precision import half_copy

from decode_helpers import TEXTS, left_padded, lm  # noqa: F401  (lm: fixture)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_greedy_matches_hf_generate_token_for_token(lm, dtype):
    model, tok = lm
    model = half_copy(model) if dtype == "bf16" else model.eval()
    ids, mask = left_padded(tok, TEXTS)
    # No stop tokens: every row runs the full length, so all 24 steps are compared.
    gen = GenerationConfig(max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    got = decode(model, ids, mask, gen)
    assert got.shape == (len(TEXTS), 24)
    assert torch.equal(got, want)


def test_stopped_rows_are_padded_and_decoding_ends_when_all_stop(lm):
    model, tok = lm
    ids, mask = left_padded(tok, TEXTS[:2])
    free = GenerationConfig(max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)
    first = decode(model, ids, mask, free)
    # Declare the second token of row 0 and the fourth of row 1 to be stop tokens.
    stops = [int(first[0, 1]), int(first[1, 3])]
    gen = GenerationConfig(max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=stops)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    got = decode(model, ids, mask, gen)
    assert torch.equal(got, want)
    assert got.shape[1] < 10  # ended early: both rows stopped
    row0_stop = next(k for k, t in enumerate(got[0].tolist()) if t in stops)
    assert (got[0, row0_stop + 1:] == tok.pad_token_id).all()


def test_top_k_one_and_tiny_top_p_sample_the_argmax():
    logits = torch.randn(5, 50)
    greedy = pick(logits, GenerationConfig(do_sample=False), None)
    for gen in (GenerationConfig(do_sample=True, top_k=1, top_p=1.0, temperature=3.0),
                GenerationConfig(do_sample=True, top_k=None, top_p=1e-6, temperature=1.0)):
        for _ in range(5):
            assert torch.equal(pick(logits, gen, None), greedy)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    gen = GenerationConfig(do_sample=True, top_k=None, top_p=0.7, temperature=1.0)
    g = torch.Generator().manual_seed(0)
    seen = {int(pick(probs.log(), gen, g)) for _ in range(300)}
    assert seen == {0, 1}


@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_top_k_draws_among_the_k_best_in_proportion(top_p):
    probs = torch.tensor([[0.02, 0.5, 0.01, 0.3, 0.15, 0.02]])
    gen = GenerationConfig(do_sample=True, top_k=3, top_p=top_p, temperature=1.0)
    g = torch.Generator().manual_seed(0)
    drawn = torch.stack([pick(probs.log(), gen, g) for _ in range(2000)]).flatten()
    counts = torch.bincount(drawn, minlength=6).float() / len(drawn)
    # top-k keeps 0.5, 0.3, 0.15 (renormalised); top-p 0.7 then keeps 0.5 and 0.3.
    kept = torch.tensor([0, 0.5, 0, 0.3, 0.15, 0]) if top_p == 1.0 else torch.tensor([0, 0.5, 0, 0.3, 0, 0])
    torch.testing.assert_close(counts, kept / kept.sum(), atol=0.04, rtol=0)


def test_sampling_follows_the_seed_through_generate(lm):
    model, tok = lm
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    d = DecodeConfig(max_new_tokens=10, do_sample=True, temperature=2.0, top_k=0, top_p=1.0, batch_size=2)
    a, b, c = (generate(model, tok, prompts, d, seed=s) for s in (5, 5, 6))
    assert a == b and a != c


def test_only_plain_greedy_and_sampling_take_the_fast_path(lm):
    model, tok = lm
    assert supports(model, generation_config(DecodeConfig(), tok))
    assert supports(model, generation_config(DecodeConfig(do_sample=True, top_k=5, top_p=0.9), tok))
    for d in (DecodeConfig(num_beams=2), DecodeConfig(repetition_penalty=1.3), DecodeConfig(no_repeat_ngram_size=2),
              DecodeConfig(min_new_tokens=2), DecodeConfig(bad_words=["house"]), DecodeConfig(stop_strings=["\n"])):
        assert not supports(model, generation_config(d, tok)), d


def test_half_copy_casts_parameters_keeps_ties_buffers_and_the_original(lm):
    model, _ = lm
    copy = half_copy(model)
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
    assert copy.lm_head.weight is copy.model.embed_tokens.weight
    assert copy.model.rotary_emb.inv_freq.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.testing.assert_close(copy.lm_head.weight.float(), model.lm_head.weight, rtol=1e-2, atol=1e-2)


def test_generate_with_bf16_replies_like_hf_generate_on_bf16_weights(lm):
    model, tok = lm
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    d = DecodeConfig(max_new_tokens=12, batch_size=len(TEXTS))
    got = generate(model, tok, prompts, d, bf16=True)
    # generate() batches the prompts longest first; the same batch through HF generate on bf16 weights:
    order = sorted(range(len(TEXTS)), key=lambda i: -len(prompts[i]))
    ids, mask = left_padded(tok, [TEXTS[i] for i in order])
    ref = half_copy(model).generate(input_ids=ids, attention_mask=mask, generation_config=generation_config(d, tok))
    want = [None] * len(TEXTS)
    for row, i in enumerate(order):
        want[i] = finish_reply(tok, ref[row, ids.shape[1]:].tolist(), set(stop_ids(tok)), [])
    assert got == want
