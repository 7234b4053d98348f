"""The real SmolLM2-135M-Instruct behind the API: a streamed reply equals the plain one and reads as English."""

from __future__ import annotations

import json

import httpx
import pytest

from tailor.models.load import resolve

from serve_helpers import serve  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def test_real_model_served_stream_equals_plain_reply(serve):
    base, _ = serve(resolve("smollm2-135m-instruct"))
    body = {"messages": [{"role": "user", "content": "Hi! How was your weekend?"}], "max_tokens": 16, "temperature": 0}
    plain = httpx.post(base + "/v1/chat/completions", json=body, timeout=300).json()
    parts = []
    with httpx.stream("POST", base + "/v1/chat/completions", json={**body, "stream": True}, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                parts.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
    reply = plain["choices"][0]["message"]["content"]
    assert len(reply.split()) >= 3 and "".join(parts) == reply
    assert plain["usage"]["completion_tokens"] <= 16
