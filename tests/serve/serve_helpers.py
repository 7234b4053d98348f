"""Helpers and fixtures for the serve tests: a livelier tiny model, a gate on the engine, a real server on
127.0.0.1 (a free port) in a thread, shut down by the fixture.

Not a conftest.py: a second module named `conftest` would shadow tests/conftest.py for `from conftest import`.
Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest


def lively(folder: Path, target: Path, std: float = 0.3, seed: int = 1) -> Path:
    """The tiny model with larger random weights, so greedy replies vary from token to token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(folder).save_pretrained(target)
    return target


class Gate:
    """Hold the engine before each decoding step until released (makes queue/timeout tests deterministic)."""

    def __init__(self, engine):
        self.open = threading.Event()
        self.reached = threading.Event()
        self.rows = None
        step = engine.decoder.step

        def gated():
            self.rows = list(engine.decoder.rows)
            self.reached.set()
            self.open.wait(timeout=120)
            return step()

        engine.decoder.step = gated


@contextlib.contextmanager
def running(app):
    """Serve `app` on a free loopback port; yields its base URL; stops the server on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def lively_model(tiny_model, tmp_path_factory) -> Path:
    return lively(tiny_model, tmp_path_factory.mktemp("lively"))


@pytest.fixture
def serve():
    """serve(folder, api_key=None, **limits) -> base URL of a running server for that model folder."""
    from tailor.runs import load as open_run
    from tailor.serve.app import Limits, create_app

    with contextlib.ExitStack() as stack:
        def start(folder, api_key=None, **limits):
            app = create_app(open_run(folder), Limits(**limits), api_key)
            base = stack.enter_context(running(app))
            return base, app
        yield start
