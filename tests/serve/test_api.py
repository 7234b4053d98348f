"""The OpenAI-compatible API on a real server (127.0.0.1, free port) with tiny random models."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import torch
from transformers import AutoTokenizer

from tailor.config.decode import DecodeConfig
from tailor.data.tokenize import prompt_ids
from tailor.errors import TailorError
from tailor.runs import load as open_run
from tailor.generate.replies import generate

from serve_helpers import Gate, lively_model, serve  # noqa: F401  (fixtures)

HELLO = [{"role": "user", "content": "hello how are you"}]


def reference_reply(folder, messages, max_tokens):
    """What tailor's own batched generation replies, greedily."""
    loaded = open_run(folder)
    ids = prompt_ids(loaded.tokenizer, messages)
    decode = DecodeConfig(max_new_tokens=max_tokens, batch_size=1)
    return generate(loaded.model, loaded.tokenizer, [ids], decode)[0]


def events(response) -> list:
    """The parsed `data:` payloads of a server-sent event stream, up to and including [DONE]."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def wait_for(condition, what: str, limit: float = 60.0):
    """Poll until condition() holds (a generous upper bound, not a timing assertion)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def test_chat_reply_matches_tailor_generation_streamed_or_not(lively_model, serve):
    base, _ = serve(lively_model)
    want = reference_reply(lively_model, HELLO, 12)
    with httpx.Client(base_url=base, timeout=60) as c:
        plain = c.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 12, "temperature": 0})
        assert plain.status_code == 200, plain.text
        body = plain.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": body["choices"][0]["message"]["content"]}
        assert body["choices"][0]["message"]["content"].strip() == want["text"]
        assert body["usage"]["completion_tokens"] == want["tokens"] + want["stopped"]  # the end-of-turn token counts
        assert body["choices"][0]["finish_reason"] == ("stop" if want["stopped"] else "length")

        with c.stream("POST", "/v1/chat/completions",
                      json={"messages": HELLO, "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            got = events(r)
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert all(ch["object"] == "chat.completion.chunk" and ch["id"] == chunks[0]["id"] for ch in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
    assert text == body["choices"][0]["message"]["content"]
    assert len([ch for ch in chunks if ch["choices"] and ch["choices"][0]["delta"].get("content")]) > 1  # really streamed
    assert chunks[-2]["choices"][0]["finish_reason"] == body["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]


def test_completions_stream_and_plain_agree(lively_model, serve):
    base, _ = serve(lively_model)
    with httpx.Client(base_url=base, timeout=60) as c:
        plain = c.post("/v1/completions", json={"prompt": "the a of", "max_tokens": 9}).json()
        with c.stream("POST", "/v1/completions", json={"prompt": "the a of", "max_tokens": 9, "stream": True}) as r:
            got = events(r)
    assert plain["object"] == "text_completion" and plain["choices"][0]["finish_reason"] == "length"
    assert plain["usage"]["completion_tokens"] == 9
    assert got[-1] == "[DONE]"
    assert "".join(ch["choices"][0]["text"] for ch in got[:-1]) == plain["choices"][0]["text"]
    assert got[-2]["choices"][0]["finish_reason"] == "length"


def test_models_health_and_page(lively_model, serve):
    base, _ = serve(lively_model)
    with httpx.Client(base_url=base, timeout=60) as c:
        models = c.get("/v1/models").json()
        assert models["object"] == "list" and models["data"][0]["id"] == lively_model.name
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["kind"] == "generate" and health["auth"] is False
        page = c.get("/")
        assert page.status_code == 200 and "/static/chat.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything from this server
        assert c.get("/static/chat.js").status_code == 200
        assert c.get("/static/chat.css").status_code == 200


@pytest.mark.parametrize("path, body, status, field", [
    ("/v1/chat/completions", {"messages": HELLO, "max_tokens": 100}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": HELLO, "max_completion_tokens": 100}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": HELLO, "temperature": 3}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": HELLO, "top_p": 0}, 400, "top_p"),
    ("/v1/chat/completions", {"messages": HELLO, "n": 2}, 400, "n"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages"),
    ("/v1/chat/completions", {"messages": HELLO, "model": "someone-else"}, 404, "model"),
    ("/v1/chat/completions", {"messages": HELLO, "tools": [{"type": "function"}]}, 400, "tools"),
    ("/v1/chat/completions", {"messages": HELLO, "frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ("/v1/chat/completions", {"messages": HELLO, "repetition_penalty": 3}, 400, "repetition_penalty"),
    ("/v1/completions", {"prompt": "hello " * 200}, 400, "prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hello", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/classify", {"input": "hello"}, 400, None),
    ("/v1/completions", {"prompt": "hello", "seed": 2**64}, 400, "seed"),  # beyond what a torch generator takes
    ("/v1/chat/completions", {"messages": HELLO, "seed": -(2**63) - 1}, 400, "seed"),
])
def test_bad_requests_get_clear_errors(lively_model, serve, path, body, status, field):
    base, _ = serve(lively_model, max_tokens=64, max_prompt_tokens=100)
    r = httpx.post(base + path, json=body, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"]
    if field:
        assert error["param"].startswith(field.split(".")[0]), error


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "x" * 100_000}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 100_000}]}),
])
def test_huge_prompts_are_refused_before_tokenizing(lively_model, serve, path, body):
    base, _ = serve(lively_model, max_prompt_tokens=100)
    r = httpx.post(base + path, json=body, timeout=60)
    assert r.status_code == 400 and "100000 characters" in r.json()["error"]["message"]


def test_prompt_plus_max_tokens_must_fit_the_context(lively_model, serve):
    base, _ = serve(lively_model, max_tokens=250, max_prompt_tokens=250)  # the tiny model's context is 256
    prompt = "hello " * 20
    r = httpx.post(base + "/v1/completions", json={"prompt": prompt, "max_tokens": 250}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "context of 256" in r.json()["error"]["message"]


def test_api_key_required_when_set(lively_model, serve):
    base, _ = serve(lively_model, api_key="s3cret")
    with httpx.Client(base_url=base, timeout=60) as c:
        assert c.get("/health").json()["auth"] is True  # liveness needs no key
        assert c.get("/v1/models").status_code == 401
        wrong = c.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2},
                       headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        right = c.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2},
                       headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200


def test_stop_strings_cut_the_reply(lively_model, serve):
    base, _ = serve(lively_model)
    with httpx.Client(base_url=base, timeout=60) as c:
        full = c.post("/v1/completions", json={"prompt": "the a of", "max_tokens": 16}).json()["choices"][0]["text"]
        stop = full[len(full) // 2: len(full) // 2 + 2]
        cut = c.post("/v1/completions", json={"prompt": "the a of", "max_tokens": 16, "stop": stop}).json()
        with c.stream("POST", "/v1/completions", json={"prompt": "the a of", "max_tokens": 16, "stop": stop, "stream": True}) as r:
            streamed = "".join(ch["choices"][0]["text"] for ch in events(r)[:-1])
    assert cut["choices"][0]["text"] == full[: full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert streamed == cut["choices"][0]["text"]


def test_sampling_is_seeded_per_request(lively_model, serve):
    base, _ = serve(lively_model)
    body = {"prompt": "hello", "max_tokens": 12, "temperature": 1.5, "seed": 7}
    with httpx.Client(base_url=base, timeout=60) as c:
        a = c.post("/v1/completions", json=body).json()["choices"][0]["text"]
        b = c.post("/v1/completions", json=body).json()["choices"][0]["text"]
        others = {c.post("/v1/completions", json={**body, "seed": s}).json()["choices"][0]["text"] for s in range(8, 12)}
        greedy = c.post("/v1/completions", json={**body, "temperature": 0}).json()["choices"][0]["text"]
    assert a == b
    # Each seed draws its own reply (12 tokens at temperature 1.5 from a random model: collisions would mean the
    # seed is ignored), and none of them is the greedy reply.
    assert len(others | {a}) == 5
    assert greedy not in others | {a}


def test_seeds_over_the_whole_generator_range_work(lively_model, serve):
    base, _ = serve(lively_model)
    with httpx.Client(base_url=base, timeout=60) as c:
        for seed in (0, 2**64 - 1, -(2**63)):
            r = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 3, "temperature": 1.0, "seed": seed})
            assert r.status_code == 200, r.text


def test_a_body_over_the_limit_gets_413_before_it_is_parsed(lively_model, serve):
    base, _ = serve(lively_model, max_body_bytes=10_000)
    big = json.dumps({"prompt": "x" * 20_000, "max_tokens": 3})
    with httpx.Client(base_url=base, timeout=60) as c:
        declared = c.post("/v1/completions", content=big, headers={"content-type": "application/json"})
        chunked = c.post("/v1/completions", content=(big[i:i + 1000].encode() for i in range(0, len(big), 1000)),
                         headers={"content-type": "application/json"})
        small = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 3})
        small_chunked = c.post("/v1/completions", content=iter([b'{"prompt": "hel', b'lo", "max_tokens": 3}']),
                               headers={"content-type": "application/json"})
    for r in (declared, chunked):
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "request_too_large" and "10000 bytes" in r.json()["error"]["message"]
    assert small.status_code == 200 and small_chunked.status_code == 200, small_chunked.text
    assert small_chunked.json()["choices"][0]["text"] == small.json()["choices"][0]["text"]


def test_health_reports_a_dead_engine_with_503(lively_model, serve):
    base, app = serve(lively_model)
    with httpx.Client(base_url=base, timeout=60) as c:
        alive = c.get("/health")
        app.state.engine.stop()  # the engine thread ends: no request would be answered any more
        dead = c.get("/health")
    assert alive.status_code == 200 and alive.json()["status"] == "ok" and alive.json()["engine"] == "running"
    assert dead.status_code == 503
    assert dead.json()["status"] == "error" and dead.json()["engine"] == "dead"


def test_full_queue_answers_429_then_recovers(lively_model, serve):
    base, app = serve(lively_model, max_batch=1, max_queue=1)
    gate = Gate(app.state.engine)
    results = {}

    def ask(key):
        results[key] = httpx.post(base + "/v1/completions", json={"prompt": "hello", "max_tokens": 3}, timeout=120)

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert gate.reached.wait(60)  # the first request holds the only batch slot
    second = threading.Thread(target=ask, args=("second",))
    second.start()
    wait_for(lambda: app.state.engine.snapshot()["waiting"] == 1, "the second request waits in the queue")
    third = httpx.post(base + "/v1/completions", json={"prompt": "hello", "max_tokens": 3}, timeout=60)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "queue_full" and third.headers["retry-after"]
    gate.open.set()
    first.join(60)
    second.join(60)
    assert results["first"].status_code == 200 and results["second"].status_code == 200
    assert httpx.post(base + "/v1/completions", json={"prompt": "hello", "max_tokens": 3}, timeout=60).status_code == 200
    assert app.state.engine.snapshot()["rejected"] == 1


def test_requests_past_the_time_limit_get_504(lively_model, serve):
    base, app = serve(lively_model, timeout=0.5)
    gate = Gate(app.state.engine)
    results = {}

    def ask():
        results["r"] = httpx.post(base + "/v1/completions", json={"prompt": "hello", "max_tokens": 50}, timeout=120)

    t = threading.Thread(target=ask)
    t.start()
    assert gate.reached.wait(60)
    time.sleep(1.0)  # past the 0.5 s limit while the engine is held
    gate.open.set()
    t.join(60)
    assert results["r"].status_code == 504
    assert "time limit" in results["r"].json()["error"]["message"]
    assert app.state.engine.snapshot()["timed_out"] == 1


def noticed(engine, gate) -> bool:
    """The request was cancelled: held at the gate, or already dropped when the client left before the engine
    got past the prefill (on a loaded machine the first token can take longer than the client waits)."""
    held = bool(gate.rows) and gate.rows[0].cancelled
    return held or engine.snapshot().get("cancelled") == 1


def test_a_disconnected_stream_stops_its_generation(lively_model, serve):
    base, app = serve(lively_model, max_tokens=200)
    engine = app.state.engine
    gate = Gate(engine)
    with httpx.Client(base_url=base, timeout=60) as c:
        with c.stream("POST", "/v1/completions", json={"prompt": "hello", "max_tokens": 200, "stream": True}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")  # the first token arrived; the engine now waits at the gate
        # leaving the block closed the connection mid-stream
    wait_for(lambda: noticed(engine, gate), "the server noticed the disconnect")
    gate.open.set()
    wait_for(lambda: engine.snapshot().get("cancelled") == 1, "the engine dropped the request")
    wait_for(lambda: engine.snapshot()["active"] == 0, "the batch emptied")
    figures = engine.snapshot()
    assert figures.get("completed", 0) == 0
    assert figures["tokens"] < 200


def test_a_disconnected_plain_request_stops_its_generation(lively_model, serve):
    base, app = serve(lively_model, max_tokens=200)
    engine = app.state.engine
    gate = Gate(engine)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(base + "/v1/completions", json={"prompt": "hello", "max_tokens": 200},
                   timeout=httpx.Timeout(60, read=1.0))
    wait_for(lambda: noticed(engine, gate), "the server noticed the disconnect")
    gate.open.set()
    wait_for(lambda: engine.snapshot().get("cancelled") == 1, "the engine dropped the request")
    wait_for(lambda: engine.snapshot()["active"] == 0, "the batch emptied")
    assert engine.snapshot().get("completed", 0) == 0


def test_concurrent_requests_share_batches_and_match_one_by_one(lively_model, serve):
    base, app = serve(lively_model, max_batch=4)
    prompts = ["hello", "the a of", "you that it is", "in is you", "assistant hello", "a"]
    lengths = [3, 12, 7, 12, 5, 9]
    with httpx.Client(base_url=base, timeout=60) as c:
        alone = [c.post("/v1/completions", json={"prompt": p, "max_tokens": n}).json()["choices"][0]["text"]
                 for p, n in zip(prompts, lengths)]
    gate = Gate(app.state.engine)  # hold the first batch so the others queue up behind it and join
    results = [None] * len(prompts)

    def ask(i):
        results[i] = httpx.post(base + "/v1/completions", json={"prompt": prompts[i], "max_tokens": lengths[i]}, timeout=120)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    wait_for(lambda: app.state.engine.snapshot()["submitted"] == 2 * len(prompts), "all requests arrived")
    gate.open.set()
    for t in threads:
        t.join(60)
    assert [r.json()["choices"][0]["text"] for r in results] == alone
    assert app.state.engine.snapshot()["largest_batch"] > 1


def test_pickled_weights_are_refused(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    folder.mkdir()
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text((tiny_model / "config.json").read_text())
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    with pytest.raises(TailorError, match="pickled weights"):
        open_run(folder)
