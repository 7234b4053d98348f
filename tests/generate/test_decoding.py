"""The decoding section maps onto HF GenerationConfig, and each setting changes what is generated."""

import dataclasses

import pytest
import torch

from tailor.config import config_from_dict
from tailor.config.decode import DecodeConfig
from tailor.errors import TailorError
from tailor.generate.replies import finish_reply, generate, generation_config
from tailor.models.load import load_model, load_tokenizer


@pytest.fixture(scope="module")
def lm(tiny_model):
    return load_model(str(tiny_model)), load_tokenizer(str(tiny_model))


def prompts(tokenizer, n=4):
    texts = ["hello how are you", "the cat is in the house", "what do you like", "tell me about the weather"]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[:n]]


def test_greedy_sets_no_sampling_or_beam_settings(lm):
    _, tok = lm
    gen = generation_config(DecodeConfig(), tok)
    assert gen.do_sample is False and gen.num_beams == 1
    assert gen.temperature in (None, 1.0) and gen.bad_words_ids is None and gen.stop_strings is None
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen.eos_token_id


def test_every_setting_reaches_generation_config(lm):
    _, tok = lm
    d = DecodeConfig(max_new_tokens=20, min_new_tokens=3, do_sample=True, temperature=1.3, top_k=7, top_p=0.8,
                     num_beams=3, length_penalty=0.6, early_stopping=True, repetition_penalty=1.2,
                     no_repeat_ngram_size=2, bad_words=["house"], stop_strings=["\n\n", "User:"])
    gen = generation_config(d, tok)
    assert (gen.max_new_tokens, gen.min_new_tokens, gen.do_sample, gen.temperature, gen.top_k, gen.top_p) == (20, 3, True, 1.3, 7, 0.8)
    assert (gen.num_beams, gen.length_penalty, gen.early_stopping) == (3, 0.6, True)
    assert (gen.repetition_penalty, gen.no_repeat_ngram_size) == (1.2, 2)
    assert gen.stop_strings == ["\n\n", "User:"]
    spelled = {tok.decode(ids) for ids in gen.bad_words_ids}
    assert spelled == {"house", " house"}
    assert d.strategy == "beam-sample" and DecodeConfig(num_beams=2).strategy == "beam"


@pytest.mark.parametrize("key,value,needle", [
    ("top_p", 0.0, "top_p"), ("top_k", -1, "top_k"), ("num_beams", 0, "num_beams"),
    ("min_new_tokens", 99, "min_new_tokens"), ("temperature", 0, "temperature"),
    ("stop_strings", [""], "stop_strings[0]"), ("no_repeat_ngram_size", -2, "no_repeat_ngram_size"),
])
def test_bad_settings_name_the_field(key, value, needle):
    with pytest.raises(TailorError, match=r"decode.*" + needle.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict({"decode": {key: value}})


def test_finish_reply_cuts_at_end_of_turn_padding_and_stop_strings(lm):
    _, tok = lm
    ids = tok("hello how are you", add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert finish_reply(tok, ids + [end, 5, 6], {end}, []) == {"text": "hello how are you", "tokens": len(ids), "stopped": True}
    assert finish_reply(tok, ids + [tok.pad_token_id] * 3, {end}, [])["stopped"] is False
    assert finish_reply(tok, ids + [tok.pad_token_id] * 3, {end}, [])["tokens"] == len(ids)
    cut = finish_reply(tok, ids, {end}, ["are", "how"])
    assert cut == {"text": "hello", "tokens": len(ids), "stopped": True}


def test_greedy_is_deterministic_and_sampling_follows_the_seed(lm):
    model, tok = lm
    p = prompts(tok)
    greedy = DecodeConfig(max_new_tokens=12, batch_size=2)
    assert generate(model, tok, p, greedy, seed=1) == generate(model, tok, p, greedy, seed=2)
    sample = DecodeConfig(max_new_tokens=12, do_sample=True, temperature=2.0, top_k=0, top_p=1.0, batch_size=2)
    a, b, c = (generate(model, tok, p, sample, seed=s) for s in (3, 3, 4))
    assert a == b
    assert a != c


def test_batched_generation_matches_one_at_a_time(lm):
    model, tok = lm
    p = prompts(tok)
    d = DecodeConfig(max_new_tokens=10, batch_size=4)
    alone = [generate(model, tok, [x], dataclasses.replace(d, batch_size=1))[0] for x in p]
    assert generate(model, tok, p, d) == alone


def test_no_repeat_ngram_and_banned_words_change_the_output(lm):
    model, tok = lm
    p = prompts(tok)
    base = DecodeConfig(max_new_tokens=24, batch_size=4)
    free = generate(model, tok, p, base)
    # A random tiny model loops: unigram repeats are common without the constraint.
    assert any(len(set(tok(r["text"], add_special_tokens=False)["input_ids"])) < r["tokens"] for r in free)

    def repeated_pairs(settings):
        gen = generation_config(settings, tok)
        counts = []
        for prompt in p:
            out = model.generate(input_ids=torch.tensor([prompt]), generation_config=gen)[0].tolist()
            pairs = list(zip(out, out[1:]))  # the constraint covers prompt and reply together
            counts.append(len(pairs) - len(set(pairs)))
        return counts

    assert sum(repeated_pairs(base)) > 0
    assert repeated_pairs(dataclasses.replace(base, no_repeat_ngram_size=2)) == [0] * len(p)

    words = [w for r in free for w in r["text"].split()]
    common = max(set(words), key=words.count)
    banned = generate(model, tok, p, dataclasses.replace(base, bad_words=[common]))
    for r in banned:
        assert common not in r["text"].split()
    assert banned != free


def test_stop_strings_cut_the_reply_where_the_string_appears(lm):
    model, tok = lm
    p = prompts(tok, 1)
    d = DecodeConfig(max_new_tokens=24, batch_size=1)
    full = generate(model, tok, p, d)[0]["text"]
    words = full.split()
    assert len(words) >= 3, full
    stop = words[len(words) // 2]
    got = generate(model, tok, p, dataclasses.replace(d, stop_strings=[stop]))[0]
    assert got["text"] == full[: full.index(stop)].strip()
    assert got["stopped"] is True


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(lm):
    model, tok = lm
    p = prompts(tok, 2)

    def logprob(prompt, text_ids):
        ids = torch.tensor([prompt + text_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
        return float(logits.gather(1, torch.tensor(text_ids)[:, None]).sum())

    n = 6
    for prompt in p:
        # Both exactly n tokens long (no early end), so their log-probabilities compare like for like.
        gen_cfg = DecodeConfig(max_new_tokens=n, min_new_tokens=n, batch_size=1)
        out_g = model.generate(input_ids=torch.tensor([prompt]), generation_config=generation_config(gen_cfg, tok))
        beam_cfg = dataclasses.replace(gen_cfg, num_beams=4, length_penalty=0.0)
        out_b = model.generate(input_ids=torch.tensor([prompt]), generation_config=generation_config(beam_cfg, tok))
        g, b = out_g[0, len(prompt):].tolist(), out_b[0, len(prompt):].tolist()
        assert len(g) == len(b) == n
        assert logprob(prompt, b) >= logprob(prompt, g) - 1e-4
