"""What the throughput benchmarks share: the machine, the samples, the bf16 peak, FLOP counts.

Run by hand (see BENCHMARKS.md); nothing here is imported by tailor itself.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from tailor.config import config_from_dict
from tailor.data.tokenize import IGNORE
from tailor.models.load import context_length, load
from tailor.tasks.dialogue import prepare

MODEL = "smollm2-135m-instruct"


def machine() -> str:
    """CPU model and core count from lscpu, plus the load average (the machine may be shared)."""
    try:
        info = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
        cpu = f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs"
    except OSError:
        cpu = platform.processor()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load}"


def config(max_length: int = 256, train: int = 0, val: int = 0, test: int = 0, **train_settings):
    """A dialogue config on chitchat; sample caps pick the same samples in every process."""
    return config_from_dict({
        "model": {"name": MODEL, "max_length": max_length},
        "data": {"source": "chitchat", "max_train_samples": train, "max_val_samples": val,
                 "max_test_samples": test, "overlong": "skip"},
        "train": train_settings,
    })


def model_and_samples(cfg):
    model, tokenizer = load(MODEL)
    splits = prepare(cfg, tokenizer, context_length(model))
    return model, tokenizer, splits


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bf16_matmul_peak(size: int = 2048, seconds: float = 3.0) -> float:
    """Best bf16 matmul GFLOP/s over short bursts: the ceiling a model FLOPs utilisation is measured against."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b  # warm up oneDNN
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        tick = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - tick) / 1e9)
    return best


def train_flops(model_config, samples: list[dict]) -> float:
    """Model FLOPs one training pass over `samples` needs (forward + backward = 3 x forward).

    Counted without padding, with the causal half of attention, and with the LM head only on
    supervised positions, since that is all the loss needs. Embedding lookups are not matmuls.
    """
    c = model_config
    d, ff, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (d // c.num_attention_heads)
    linear = layers * (2 * d * d + 2 * d * kv + 3 * d * ff)  # q, o, k, v, gate/up/down
    total = 0.0
    for s in samples:
        n = len(s["input_ids"])
        supervised = sum(1 for y in s["labels"][1:] if y != IGNORE)
        attention = layers * 2 * d * n * (n + 1)  # QK^T and AV over the causal half, forward
        total += 3 * (2 * linear * n + attention + 2 * d * c.vocab_size * supervised)
    return total


def prefix_flops_saved(model_config, batches: list[list[dict]]) -> float:
    """The part of `train_flops` tailor does not compute: a prefix every row of a batch shares runs
    once (`tailor.models.prefix`), not once per row. Subtracted, it gives the FLOPs actually done."""
    from tailor.models.prefix import MIN_SHARED

    saved = 0.0
    for batch in batches:
        ids = [s["input_ids"] for s in batch]
        shared = min(len(os.path.commonprefix(ids)), max(map(len, ids)) - 1)
        if len(ids) > 1 and shared >= MIN_SHARED:
            prefix = {"input_ids": ids[0][:shared], "labels": [IGNORE] * shared}
            saved += (len(ids) - 1) * train_flops(model_config, [prefix])
    return saved


def run_child(script: str, args: list[str], timeout: float) -> dict:
    """Run one side of a benchmark in its own process, so its peak memory is its own; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


HERE = Path(__file__).resolve().parent
