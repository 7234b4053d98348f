"""`tailor serve` as a user runs it: a subprocess bound to 127.0.0.1, stopped by the test."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx

from tailor.cli import main
from tailor.commands.serve import is_loopback

from serve_helpers import lively_model  # noqa: F401  (fixtures)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_runs_a_keyed_server(lively_model, tmp_path):
    port = free_port()
    key_file = tmp_path / "key"
    key_file.write_text("k-123\n")
    proc = subprocess.Popen([sys.executable, "-m", "tailor.cli", "serve", str(lively_model), "--port", str(port),
                             "--api-key-file", str(key_file), "--max-tokens", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < end, "the server did not come up"
            time.sleep(0.2)
        assert httpx.get(base + "/v1/models", timeout=30).status_code == 401
        r = httpx.post(base + "/v1/completions", json={"prompt": "hello", "max_tokens": 4},
                       headers={"Authorization": "Bearer k-123"}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        too_many = httpx.post(base + "/v1/completions", json={"prompt": "hello", "max_tokens": 17},
                              headers={"Authorization": "Bearer k-123"}, timeout=60)
        assert too_many.status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = proc.stdout.read()
    assert f"http://127.0.0.1:{port}/" in out and "key required" in out


def test_serve_command_errors_are_clear(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "key").write_text("")
    assert main(["serve", str(tmp_path), "--api-key-file", str(empty / "key")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


def test_served_replies_are_tailor_generates_on_the_same_weights(lively_model, monkeypatch):
    """`tailor serve` decodes with the weights `tailor generate` uses (the run's precision, or bf16 weights in fp32
    on a CPU without native bf16: `decode_bf16`) and the same decoder, so a greedy chat reply is the same text."""
    import torch
    import uvicorn

    from tailor.config.decode import DecodeConfig
    from tailor.data.tokenize import prompt_ids
    from tailor.generate.replies import decode_bf16, generate
    from tailor.runs import load

    from serve_helpers import running

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    assert main(["serve", str(lively_model)]) == 0
    app = apps[0]
    loaded = load(lively_model)
    half = decode_bf16(loaded.model, loaded.cfg.train.precision, loaded.cfg.decode)
    assert next(app.state.loaded.model.parameters()).dtype == (torch.bfloat16 if half else torch.float32)
    messages = [{"role": "user", "content": "the cat and the house"}]
    want = generate(loaded.model, loaded.tokenizer, [prompt_ids(loaded.tokenizer, messages)],
                    DecodeConfig(max_new_tokens=16, batch_size=1), half)[0]
    with running(app) as base:
        got = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                         json={"messages": messages, "max_tokens": 16, "temperature": 0}).json()
    assert got["choices"][0]["message"]["content"].strip() == want["text"]
