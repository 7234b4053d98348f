"""On a CUDA GPU: training, generation and serving run on it (the `gpu` marker; skipped without CUDA).

benchmarks/gpu_check.sh runs the real model the same way and prints the figures."""

import sys
from pathlib import Path

import httpx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from conftest import read_jsonl  # noqa: E402
from serve_helpers import lively_model, running  # noqa: E402,F401  (fixture)
from tailor import device as devices  # noqa: E402
from tailor.config import load_config  # noqa: E402
from tailor.workflow import train_job  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]


@pytest.fixture(autouse=True)
def on_cuda():
    saved = devices._current
    devices.choose("cuda")
    yield
    devices._current = saved


def test_training_runs_on_the_gpu_in_its_precision(tiny_config):
    seen = set()

    def record_inputs(module, args):  # returns None: the inputs go on unchanged
        seen.update(t.device.type for t in args if isinstance(t, torch.Tensor))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record_inputs)
    try:
        cfg = load_config(tiny_config(train={"device": "cuda", "precision": "auto", "max_steps": 6,
                                             "learning_rate": 3e-3, "gradient_checkpointing": True}))
        summary = train_job(cfg)
    finally:
        hook.remove()
    assert seen == {"cuda"}, seen
    assert summary["train"]["device"].startswith("cuda")
    assert summary["train"]["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    steps = [r for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "train"]
    assert 0 < steps[-1]["peak_memory_mb"] < torch.cuda.get_device_properties(0).total_memory / 2**20
    assert steps[-1]["loss"] < steps[0]["loss"]


def test_generation_on_the_gpu_matches_the_cpu(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tailor.config.decode import DecodeConfig
    from tailor.generate.replies import generate

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    decode = DecodeConfig(max_new_tokens=8, lookahead=0)
    on_cpu = generate(model, tokenizer, [[5, 6, 7], [8, 9]], decode)
    on_gpu = generate(devices.place(model), tokenizer, [[5, 6, 7], [8, 9]], decode)
    assert [r["text"] for r in on_gpu] == [r["text"] for r in on_cpu]


def test_the_server_answers_from_the_gpu(lively_model):
    from tailor.runs import load as open_run
    from tailor.serve.app import Limits, create_app

    loaded = open_run(lively_model)
    assert devices.of(loaded.model).type == "cuda"
    with running(create_app(loaded, Limits(), None)) as base:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] > 0


@pytest.mark.skipif(not __import__("importlib").util.find_spec("bitsandbytes"), reason="bitsandbytes is not installed")
def test_qlora_trains_on_4bit_weights(tiny_config):
    cfg = load_config(tiny_config(model={"quantize": "4bit", "lora": {"rank": 4}},
                                  train={"device": "cuda", "max_steps": 4, "learning_rate": 3e-3}))
    summary = train_job(cfg)
    assert summary["train"]["steps"] == 4
