"""Fixtures for the serve tests: a real server on 127.0.0.1 (a free port), shut down by the fixture."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from serve_helpers import Gate, lively, running  # noqa: F401


@pytest.fixture(scope="session")
def lively_model(tiny_model, tmp_path_factory) -> Path:
    return lively(tiny_model, tmp_path_factory.mktemp("lively"))


@pytest.fixture
def serve():
    """serve(folder, api_key=None, **limits) -> base URL of a running server for that model folder."""
    from tailor.export.standalone import load_standalone
    from tailor.serve.app import Limits, create_app

    with contextlib.ExitStack() as stack:
        def start(folder, api_key=None, **limits):
            app = create_app(load_standalone(folder), Limits(**limits), api_key)
            base = stack.enter_context(running(app))
            return base, app
        yield start
