"""Real llama.cpp for the export tests (the `llama_cpp` fixture; test modules import it from here).

Not a conftest.py: a second module named `conftest` would shadow tests/conftest.py for `from conftest import`.

llama.cpp is the CPU library of the pinned llama-cpp-cffi wheel, set up by `make test` (see the
Makefile's llamacpp target) into .llamacpp/ and named by LLAMACPP_RUNTIME; the loader is the shared
tool llamacpp.py (LLAMACPP_TOOLS, default ../shared/tools/llamacpp). Where make test or CI should have
set it up (LLAMACPP_RUNTIME given, or CI=true) a missing runtime fails the tests; only a plain pytest
run on a machine without it skips them, saying how to set it up.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = "../shared/tools/llamacpp/setup.sh --python .venv/bin/python .llamacpp (or make test)"


@pytest.fixture(scope="session")
def llama_cpp():
    """The shared llamacpp module with the runtime loaded (its `Llama` class runs GGUF files)."""
    tools = Path(os.environ.get("LLAMACPP_TOOLS") or ROOT.parent / "shared" / "tools" / "llamacpp")
    named = os.environ.get("LLAMACPP_RUNTIME")
    runtime = Path(named or ROOT / ".llamacpp")
    required = bool(named) or os.environ.get("CI") == "true"
    problem = None
    if not (tools / "llamacpp.py").is_file():
        problem = f"the llama.cpp tools are not at {tools} (LLAMACPP_TOOLS)"
    elif not any(runtime.glob("_llama_cpp_cpu*.so")):
        problem = f"no llama.cpp runtime in {runtime} (LLAMACPP_RUNTIME)"
    if problem and required:
        pytest.fail(f"{problem}: make test should have set it up; run {SETUP_HINT}")
    if problem:
        pytest.skip(f"{problem}; outside make test, set it up with {SETUP_HINT}")
    os.environ["LLAMACPP_RUNTIME"] = str(runtime)
    sys.path.insert(0, str(tools))
    module = importlib.import_module("llamacpp")
    try:
        module.load()
    except module.LlamaCppError as e:
        pytest.fail(f"llama.cpp runtime in {runtime} cannot be loaded: {e}")
    return module
