"""The chat page in headless Chromium, driven over the WebDriver protocol (chromedriver + httpx).

Needs /usr/bin/chromium and /usr/bin/chromedriver (`make test` installs them); skipped without them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from serve_helpers import Gate, lively_model, serve  # noqa: F401  (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

# `make test` (and so CI) installs both: there a missing browser fails these tests instead of skipping them.
pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")) and not os.environ.get("CI"),
                                reason="headless Chromium and chromedriver are not installed (make test installs them)")


class Browser:
    """Just enough of the W3C WebDriver protocol: open a page, find, type, click, run a script."""

    def __init__(self, profile):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        end = time.monotonic() + 60
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < end, "chromedriver did not start"
            time.sleep(0.1)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--window-size=1000,800"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        r = self.http.request(method, path, json=body)
        value = r.json()["value"]
        assert r.status_code == 200, value
        return value

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def open(self, url):
        self.s("POST", "/url", {"url": url})

    def find(self, css):
        return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css, text):
        self.s("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css):
        self.s("POST", f"/element/{self.find(css)}/click", {})

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script, what, limit=60.0):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            value = self.js(script)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never happened in the page: {what}")

    def close(self):
        try:
            self.s("DELETE", "")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


def test_page_streams_the_same_reply_as_the_api(lively_model, serve, browser):
    base, app = serve(lively_model)
    want = httpx.post(base + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "hello how are you"}], "max_tokens": 12, "temperature": 0,
    }).json()["choices"][0]["message"]["content"]
    gate = Gate(app.state.engine)
    browser.open(base + "/")
    browser.wait(f"return document.getElementById('model').textContent === {lively_model.name!r}", "the model name shows")
    browser.js("document.getElementById('max-tokens').value = '12'")
    browser.type("#input", "hello how are you")
    browser.click("#send")
    # The engine is held after the first token: the page must already show it, still streaming.
    assert gate.reached.wait(60)
    partial = browser.wait("const m = document.querySelector('.msg.assistant.streaming'); return m && m.textContent",
                           "the first token is painted while the reply streams")
    assert want.startswith(partial) and len(partial) < len(want)
    assert browser.js("return document.getElementById('stop').disabled") is False
    gate.open.set()
    browser.wait("return document.querySelector('.msg.assistant[data-done]') !== null", "the reply finished")
    assert browser.js("return document.querySelector('.msg.user').textContent") == "hello how are you"
    assert browser.js("return document.querySelector('.msg.assistant').textContent") == want
    assert browser.js("return document.querySelector('.msg.assistant').dataset.finish") == "length"
    assert browser.js("return document.getElementById('send').disabled") is False
    assert not browser.js("return document.querySelector('.msg.error')")


def test_stop_button_ends_the_generation_on_the_server(lively_model, serve, browser):
    base, app = serve(lively_model, max_tokens=200)
    engine = app.state.engine
    gate = Gate(engine)
    browser.open(base + "/")
    browser.js("document.getElementById('max-tokens').value = '200'")
    browser.type("#input", "hello")
    browser.click("#send")
    assert gate.reached.wait(60)
    browser.wait("return document.querySelector('.msg.assistant.streaming')", "the reply started")
    browser.click("#stop")
    browser.wait("return document.getElementById('status').textContent === 'stopped'", "the page says stopped")
    end = time.monotonic() + 60
    while not gate.rows[0].cancelled:
        assert time.monotonic() < end, "the server never saw the page abort"
        time.sleep(0.05)
    gate.open.set()
    end = time.monotonic() + 60
    while engine.snapshot().get("cancelled") != 1:
        assert time.monotonic() < end, "the engine kept the aborted request"
        time.sleep(0.05)
    assert engine.snapshot()["tokens"] < 200


def test_page_shows_api_errors(lively_model, serve, browser):
    base, _ = serve(lively_model, api_key="page-key")
    browser.open(base + "/")
    browser.wait("return !document.getElementById('key-row').hidden", "the key field shows when a key is needed")
    browser.type("#input", "hello")
    browser.click("#send")
    error = browser.wait("const e = document.querySelector('.msg.error'); return e && e.textContent", "an error shows")
    assert "401" in error and "API key" in error
    browser.type("#api-key", "page-key")
    browser.js("document.getElementById('max-tokens').value = '4'")
    browser.type("#input", "hello")
    browser.click("#send")
    browser.wait("return document.querySelector('.msg.assistant[data-done]') !== null", "the keyed reply arrives")
    assert browser.js("return document.querySelector('.msg.assistant').dataset.finish") == "length"
