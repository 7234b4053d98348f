"""The classification endpoint, on a tiny LlamaForSequenceClassification run folder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from serve_helpers import serve  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def classifier_run(tiny_model, tmp_path_factory) -> Path:
    """runs/<name>/model/ holding a tiny sentiment classifier and a tailor.yaml saying task: classification."""
    run = tmp_path_factory.mktemp("runs") / "sentiment"
    folder = run / "model"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, num_labels=2,
                         id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)  # distinct scores per text
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "tailor.yaml").write_text(yaml.safe_dump({"name": "sentiment", "task": "classification"}))
    return run


def test_classify_returns_each_texts_label_and_scores(classifier_run, serve):
    base, _ = serve(classifier_run)
    texts = ["hello how are you", "the a of", "you that it is the hello and to in"]
    with httpx.Client(base_url=base, timeout=60) as c:
        assert c.get("/health").json()["kind"] == "classify"
        assert c.get("/v1/models").json()["data"][0]["id"] == "sentiment"
        r = c.post("/v1/classify", json={"input": texts, "model": "sentiment"})
        one = c.post("/v1/classify", json={"input": texts[2]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    model = LlamaForSequenceClassification.from_pretrained(classifier_run / "model")
    tokenizer = AutoTokenizer.from_pretrained(classifier_run / "model")
    for i, text in enumerate(texts):  # each text alone, no padding: the batch must not change the answer
        with torch.no_grad():
            probs = model(**tokenizer([text], return_tensors="pt")).logits.softmax(-1)[0]
        assert data[i]["index"] == i
        assert data[i]["label"] == ("positive" if probs[1] > probs[0] else "negative")
        assert data[i]["scores"]["positive"] == pytest.approx(probs[1].item(), abs=1e-5)
        assert data[i]["score"] == pytest.approx(probs.max().item(), abs=1e-5)
    assert one.json()["data"][0]["scores"] == pytest.approx(data[2]["scores"], abs=1e-5)


def test_classifier_refuses_generation_and_too_many_inputs(classifier_run, serve):
    base, _ = serve(classifier_run, max_inputs=2)
    with httpx.Client(base_url=base, timeout=60) as c:
        chat = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        many = c.post("/v1/classify", json={"input": ["a", "b", "c"]})
        empty = c.post("/v1/classify", json={"input": []})
    assert chat.status_code == 400 and "/v1/classify" in chat.json()["error"]["message"]
    assert many.status_code == 400 and "limit of 2" in many.json()["error"]["message"]
    assert empty.status_code == 400


class BackendSpy:
    """Stands in for the fast tokenizer's Rust backend and records which threads use it."""

    def __init__(self, inner):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "threads", set())

    def __getattr__(self, name):
        self.threads.add(threading.get_ident())
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        self.threads.add(threading.get_ident())
        setattr(self.inner, name, value)


def test_the_tokenizer_is_used_by_one_thread_only_under_concurrent_requests(classifier_run, serve):
    # The fast tokenizer is not thread-safe ("Already borrowed"): the model's worker thread must never touch it.
    base, app = serve(classifier_run)
    tokenizer = app.state.loaded.tokenizer
    spy = BackendSpy(tokenizer._tokenizer)
    tokenizer._tokenizer = spy
    texts = [["hello how are you", "the a of"], ["you that it is the hello and to in"], ["a", "to in is you that"]]
    results = []

    def ask(batch):
        results.append(httpx.post(base + "/v1/classify", json={"input": batch}, timeout=60))

    threads = [threading.Thread(target=ask, args=(texts[i % 3],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 12 and all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len(spy.threads) == 1


def test_a_timed_out_request_keeps_the_model_busy_until_it_finishes(classifier_run, serve):
    base, app = serve(classifier_run, timeout=0.5)
    model = app.state.loaded.model
    release, inside = threading.Event(), threading.Event()
    running, most = [0], [0]
    forward = model.forward

    def slow_forward(*args, **kwargs):
        running[0] += 1
        most[0] = max(most[0], running[0])
        inside.set()
        try:
            release.wait(30)  # the first request outlives its time limit in here
            return forward(*args, **kwargs)
        finally:
            running[0] -= 1

    model.forward = slow_forward
    results = {}

    def ask(key):
        results[key] = httpx.post(base + "/v1/classify", json={"input": ["hello"]}, timeout=60)

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert inside.wait(30)
    first.join(30)
    assert results["first"].status_code == 504
    second = threading.Thread(target=ask, args=("second",))
    second.start()
    watch_until = time.monotonic() + 3  # were the lock already free, the second request would reach the model now
    while running[0] < 2 and time.monotonic() < watch_until:
        time.sleep(0.02)
    assert running[0] == 1  # the first forward pass still holds the model
    release.set()
    second.join(30)
    assert most[0] == 1
    assert results["second"].status_code in (200, 504)
