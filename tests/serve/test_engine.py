"""The batching scheduler on its own: joined and retired rows decode exactly like one-by-one generation."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tailor.generate.replies import stop_ids
from tailor.serve.engine import Engine, QueueFull, Sampling, Sequence

from serve_helpers import lively_model  # noqa: F401  (fixtures)


def hf_greedy(model, tokenizer, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                         eos_token_id=stop_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)
    return out[0, len(prompt):].tolist()


def run(engine, seqs, limit=60.0):
    for seq in seqs:
        engine.submit(seq)
    end = time.monotonic() + limit
    while not all(s.finished for s in seqs):
        assert time.monotonic() < end, "the engine did not finish"
        time.sleep(0.01)


@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_continuous_batching_matches_hf_generate(lively_model, max_batch):
    model = AutoModelForCausalLM.from_pretrained(lively_model)
    tokenizer = AutoTokenizer.from_pretrained(lively_model)
    texts = ["hello how are you", "the a of", "you that it is the hello and to in", "a", "assistant hello", "in is you"]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    lengths = [3, 12, 7, 12, 5, 9]  # rows leave at different steps; waiting ones join mid-flight
    want = [hf_greedy(model, tokenizer, p, n) for p, n in zip(prompts, lengths)]
    engine = Engine(model, tokenizer, stop_ids(tokenizer), max_batch=max_batch, max_queue=16)
    engine.start()
    try:
        seqs = [Sequence(p, Sampling(max_tokens=n), lambda e: None, time.monotonic() + 60) for p, n in zip(prompts, lengths)]
        run(engine, seqs)
    finally:
        engine.stop()
    assert [s.generated for s in seqs] == want
    assert engine.snapshot()["largest_batch"] == min(max_batch, len(texts))


def test_events_spell_the_decoded_reply(lively_model):
    model = AutoModelForCausalLM.from_pretrained(lively_model)
    tokenizer = AutoTokenizer.from_pretrained(lively_model)
    events = []
    engine = Engine(model, tokenizer, stop_ids(tokenizer))
    engine.start()
    try:
        seq = Sequence(tokenizer("hello")["input_ids"], Sampling(max_tokens=10), events.append, time.monotonic() + 60)
        run(engine, [seq])
    finally:
        engine.stop()
    text = "".join(e[1] for e in events if e[0] == "delta")
    assert text == tokenizer.decode(seq.generated, skip_special_tokens=True)
    assert events[-1] == ("done", "length", 10)


def test_queue_limit():
    class Tok:
        pad_token_id = 0

    engine = Engine(torch.nn.Linear(1, 1), Tok(), [0], max_batch=1, max_queue=2)  # not started: nothing drains
    for _ in range(2):
        engine.submit(Sequence([1], Sampling(max_tokens=1), lambda e: None, time.monotonic() + 60))
    with pytest.raises(QueueFull):
        engine.submit(Sequence([1], Sampling(max_tokens=1), lambda e: None, time.monotonic() + 60))
    assert engine.snapshot()["rejected"] == 1


# Choosing tokens per row (sampling.pick) is tested in tests/generate/test_decoder.py.


@pytest.mark.parametrize("n", [1, 2])
def test_no_repeat_ngram_size_matches_hf_generate(lively_model, n):
    """The run's decode.no_repeat_ngram_size reaches served replies, with transformers' semantics."""
    model = AutoModelForCausalLM.from_pretrained(lively_model)
    tokenizer = AutoTokenizer.from_pretrained(lively_model)
    prompts = [tokenizer(t)["input_ids"] for t in ["hello how are you", "the a of", "a", "in is you"]]
    # Each prompt, its greedy reply, the prompt again: the model wants to repeat what it said.
    prompts = [p + hf_greedy(model, tokenizer, p, 8) + p for p in prompts]
    kwargs = dict(max_new_tokens=48, do_sample=False, eos_token_id=stop_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)
    want = [model.generate(torch.tensor([p]), no_repeat_ngram_size=n, **kwargs)[0, len(p):].tolist() for p in prompts]
    assert want != [hf_greedy(model, tokenizer, p, 48) for p in prompts]  # the constraint changes these replies
    engine = Engine(model, tokenizer, stop_ids(tokenizer), max_batch=3, max_queue=16)
    engine.start()
    try:
        seqs = [Sequence(p, Sampling(max_tokens=48, no_repeat_ngram_size=n), lambda e: None, time.monotonic() + 60)
                for p in prompts]
        run(engine, seqs)
    finally:
        engine.stop()
    assert [s.generated for s in seqs] == want


@pytest.mark.parametrize("kernels", [True, False])
def test_decode_kernels_setting_reaches_the_engine_thread(lively_model, kernels):
    """decode.kernels false: the server decodes with torch's own ops (the kernels are switched off in its thread)."""
    from tailor import kernels as kernel_paths

    model = AutoModelForCausalLM.from_pretrained(lively_model)
    tokenizer = AutoTokenizer.from_pretrained(lively_model)
    engine = Engine(model, tokenizer, stop_ids(tokenizer), kernels=kernels)
    seen, step = [], engine.decoder.step
    engine.decoder.step = lambda: (seen.append(kernel_paths.available()), step())[1]
    engine.start()
    try:
        run(engine, [Sequence(tokenizer("hello")["input_ids"], Sampling(max_tokens=3), lambda e: None,
                              time.monotonic() + 60)])
    finally:
        engine.stop()
    assert seen and set(seen) == {kernels and kernel_paths.supported()}
