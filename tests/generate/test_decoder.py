"""The one decoder returns what HF `generate` returns on either cache, joins rows mid-flight, and covers
only what it implements."""

import pytest
import torch
from transformers import GenerationConfig

from tailor.config.decode import DecodeConfig
from tailor.generate.decoder import Decoder, ForwardCache, LeanCache, Row, decode, supports
from tailor.generate.sampling import Sampling, pick
from tailor.generate.replies import finish_reply, generate, generation_config, stop_ids
from tailor.precision import half_copy

from decode_helpers import TEXTS, bf16_kind, left_padded, lm, reference  # noqa: F401  (lm, bf16_kind: fixtures)


@pytest.mark.parametrize("use_lean", [False, True], ids=["forward", "lean"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_greedy_matches_hf_generate_token_for_token(lm, dtype, use_lean):
    model, tok = lm
    model = half_copy(model) if dtype == "bf16" else model.eval()
    ids, mask = left_padded(tok, TEXTS)
    # No stop tokens: every row runs the full length, so all 24 steps are compared.
    gen = GenerationConfig(max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)
    want = (reference(model) if use_lean else model).generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    got = decode(model, ids, mask, gen, use_lean=use_lean)
    assert got.shape == (len(TEXTS), 24)
    assert torch.equal(got, want)


@pytest.mark.parametrize("use_lean", [False, True], ids=["forward", "lean"])
def test_stopped_rows_are_padded_and_decoding_ends_when_all_stop(lm, use_lean):
    model, tok = lm
    ids, mask = left_padded(tok, TEXTS[:2])
    free = GenerationConfig(max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)
    first = decode(model, ids, mask, free, use_lean=use_lean)
    # Declare the second token of row 0 and the fourth of row 1 to be stop tokens.
    stops = [int(first[0, 1]), int(first[1, 3])]
    gen = GenerationConfig(max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=stops)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    got = decode(model, ids, mask, gen, use_lean=use_lean)
    assert torch.equal(got, want)
    assert got.shape[1] < 10  # ended early: both rows stopped
    row0_stop = next(k for k, t in enumerate(got[0].tolist()) if t in stops)
    assert (got[0, row0_stop + 1:] == tok.pad_token_id).all()


def row(**sampling):
    return Row([1, 2], Sampling(max_tokens=1, **sampling), generator=torch.Generator().manual_seed(0))


def test_top_k_one_and_tiny_top_p_sample_the_argmax():
    logits = torch.randn(5, 50)
    greedy = pick(logits, [row()] * 5)
    assert torch.equal(greedy, logits.argmax(-1))
    for settings in (dict(temperature=3.0, top_k=1), dict(temperature=1.0, top_p=1e-6)):
        for _ in range(5):
            assert torch.equal(pick(logits, [row(**settings)] * 5), greedy)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    r = row(temperature=1.0, top_p=0.7)
    seen = {int(pick(probs.log(), [r])) for _ in range(300)}
    assert seen == {0, 1}


@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_top_k_draws_among_the_k_best_in_proportion(top_p):
    probs = torch.tensor([[0.02, 0.5, 0.01, 0.3, 0.15, 0.02]])
    r = row(temperature=1.0, top_k=3, top_p=top_p)
    drawn = torch.stack([pick(probs.log(), [r]) for _ in range(2000)]).flatten()
    counts = torch.bincount(drawn, minlength=6).float() / len(drawn)
    # top-k keeps 0.5, 0.3, 0.15 (renormalised); top-p 0.7 then keeps 0.5 and 0.3.
    kept = torch.tensor([0, 0.5, 0, 0.3, 0.15, 0]) if top_p == 1.0 else torch.tensor([0, 0.5, 0, 0.3, 0, 0])
    torch.testing.assert_close(counts, kept / kept.sum(), atol=0.04, rtol=0)


def test_rows_of_one_batch_keep_their_own_settings():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    out = pick(logits, [row(), row(temperature=1.0, top_k=1), row(temperature=1.0, top_p=1e-6),
                        row(temperature=1.0, top_k=5)])
    assert out[0] == logits[0].argmax() and out[1] == logits[1].argmax() and out[2] == logits[2].argmax()
    assert out[3] in torch.topk(logits[3], 5).indices  # sampling stays within the top 5


def test_repetition_penalty_discourages_seen_tokens():
    logits = torch.zeros(1, 10)
    logits[0, 1] = 2.0  # token 1 (in the prompt) is best ...
    logits[0, 5] = 1.5
    assert pick(logits, [row()])[0] == 1
    assert pick(logits, [row(repetition_penalty=2.0)])[0] == 5  # ... until it is penalised: 2.0/2 < 1.5


def test_sampling_follows_the_seed_through_generate(lm):
    model, tok = lm
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    d = DecodeConfig(max_new_tokens=10, do_sample=True, temperature=2.0, top_k=0, top_p=1.0, batch_size=2)
    a, b, c = (generate(model, tok, prompts, d, seed=s) for s in (5, 5, 6))
    assert a == b and a != c


def test_the_decoder_takes_what_it_implements_and_leaves_the_rest_to_generate(lm):
    model, tok = lm
    for d in (DecodeConfig(), DecodeConfig(do_sample=True, top_k=5, top_p=0.9), DecodeConfig(repetition_penalty=1.3),
              DecodeConfig(no_repeat_ngram_size=2), DecodeConfig(stop_strings=["\n"])):
        assert supports(model, generation_config(d, tok)), d
    for d in (DecodeConfig(num_beams=2), DecodeConfig(min_new_tokens=2), DecodeConfig(bad_words=["house"])):
        assert not supports(model, generation_config(d, tok)), d


@pytest.mark.parametrize("use_lean", [False, True], ids=["forward", "lean"])
@pytest.mark.parametrize("setting", [dict(repetition_penalty=1.8), dict(no_repeat_ngram_size=2)])
def test_penalties_match_hf_generate(lm, use_lean, setting):
    model, tok = lm
    ids, mask = left_padded(tok, TEXTS)
    gen = GenerationConfig(max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None,
                           **setting)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
    plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
                           pad_token_id=tok.pad_token_id, eos_token_id=None)[:, ids.shape[1]:]
    assert not torch.equal(want, plain)  # the setting changes these replies
    assert torch.equal(decode(model, ids, mask, gen, use_lean=use_lean), want)


def test_stop_strings_end_replies_where_generate_ends_them(lm):
    model, tok = lm
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    free = generate(model, tok, prompts, DecodeConfig(max_new_tokens=16, batch_size=4))
    stop = free[0]["text"].split()[2]  # a word the first reply says
    d = DecodeConfig(max_new_tokens=16, batch_size=4, stop_strings=[stop])
    gen = generation_config(d, tok)
    assert supports(model, gen)
    got = generate(model, tok, prompts, d)
    order = sorted(range(len(TEXTS)), key=lambda i: -len(prompts[i]))
    ids, mask = left_padded(tok, [TEXTS[i] for i in order])
    ref = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen, tokenizer=tok)
    want = [None] * len(TEXTS)
    for r, i in enumerate(order):
        want[i] = finish_reply(tok, ref[r, ids.shape[1]:].tolist(), set(stop_ids(tok)), [stop])
    # The same texts. A stop string inside a token ends our reply at that token; transformers only stops where
    # the text ends with the string, so its replies may run on (their text is cut at the string all the same).
    assert [(g["text"], g["stopped"]) for g in got] == [(w["text"], w["stopped"]) for w in want]
    assert all(g["tokens"] <= w["tokens"] for g, w in zip(got, want))
    assert got[0]["stopped"] and got[0]["tokens"] < free[0]["tokens"]


@pytest.mark.parametrize("use_lean", [False, True], ids=["forward", "lean"])
def test_rows_joined_mid_flight_and_dropped_decode_as_alone(lm, use_lean):
    """Continuous batching: rows added while others run, and rows dropped, reply as each would alone."""
    model, tok = lm
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    alone = [model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                            eos_token_id=None)[0, len(p):].tolist() for p in prompts]
    decoder = Decoder(model, [], tok.pad_token_id, use_lean=use_lean)
    assert decoder.cache_type is (LeanCache if use_lean else ForwardCache)
    rows = [Row(p, Sampling(max_tokens=12)) for p in prompts]
    decoder.add(rows[:2])
    for _ in range(3):
        decoder.step()
    decoder.add(rows[2:3])
    decoder.step()
    decoder.keep([rows[0], rows[2]])  # row 1 leaves; the cache drops its slots
    decoder.add(rows[3:])
    while any(r.done is None for r in decoder.rows):
        decoder.step()
        decoder.keep([r for r in decoder.rows if r.done is None])
    assert decoder.size == 0
    assert rows[1].generated == alone[1][:len(rows[1].generated)] and len(rows[1].generated) == 5
    del rows[1], alone[1]
    assert [r.generated for r in rows] == alone


def test_half_copy_casts_parameters_keeps_ties_buffers_and_the_original(lm):
    model, _ = lm
    copy = half_copy(model)
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
    assert copy.lm_head.weight is copy.model.embed_tokens.weight
    assert copy.model.rotary_emb.inv_freq.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.testing.assert_close(copy.lm_head.weight.float(), model.lm_head.weight, rtol=1e-2, atol=1e-2)


def test_generate_with_bf16_replies_like_hf_generate_on_bf16_weights(lm, bf16_kind):
    """On a CPU without native bf16 the replies are those of the fp32 forward on the bf16 weights."""
    model, tok = lm
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    d = DecodeConfig(max_new_tokens=12, batch_size=len(TEXTS))
    got = generate(model, tok, prompts, d, bf16=True)
    # generate() batches the prompts longest first; the same batch through HF generate on bf16 weights:
    order = sorted(range(len(TEXTS)), key=lambda i: -len(prompts[i]))
    ids, mask = left_padded(tok, [TEXTS[i] for i in order])
    ref = reference(half_copy(model)).generate(input_ids=ids, attention_mask=mask, generation_config=generation_config(d, tok))
    want = [None] * len(TEXTS)
    for row, i in enumerate(order):
        want[i] = finish_reply(tok, ref[row, ids.shape[1]:].tolist(), set(stop_ids(tok)), [])
    assert got == want


def test_deployment_decodes_bf16_weights_where_they_decode_fastest(lm, monkeypatch):
    """precision auto on a CPU without native bf16: Llama-family models decode on bf16 weights in fp32 where the
    widening kernel runs; fp32 asked for, other models, beams and decode.kernels off keep fp32 weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tailor import device as devices
    from tailor import kernels
    from tailor.generate.replies import decode_bf16

    model, _ = lm
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    d = DecodeConfig()
    assert decode_bf16(model, "auto", d) == kernels.avx512_available()
    assert not decode_bf16(model, "fp32", d)
    assert not decode_bf16(model, "auto", DecodeConfig(kernels=False))
    assert not decode_bf16(model, "auto", DecodeConfig(num_beams=2))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    assert not decode_bf16(gpt2, "auto", d)
    assert decode_bf16(gpt2, "bf16", d)  # asked for: honoured (emulated where the CPU has no bf16)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert decode_bf16(gpt2, "auto", d) and decode_bf16(model, "auto", d)
