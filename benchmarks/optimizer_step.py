"""The optimizer step alone, per train.optimizer, on SmolLM2-135M's weights with random gradients.

    .venv/bin/python benchmarks/optimizer_step.py [--steps 5]

Prints the first step (torchao's quantized optimizers compile their update there) and the range of the next
--steps. The step is what train.optimizer adds to every training step; the rest of the step is unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL, machine  # noqa: E402

from tailor.models.load import load  # noqa: E402
from tailor.train.loop import make_optimizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--kinds", default="adamw,adamw_bf16,adamw_fp8,adamw_8bit,adamw_4bit")
    a = p.parse_args()
    print(machine())
    model, _ = load(MODEL)
    torch.manual_seed(0)
    for param in model.parameters():
        param.grad = torch.randn_like(param) * 1e-3
    for kind in a.kinds.split(","):
        optimizer = make_optimizer(model, 1e-4, 0.01, [0.9, 0.999], kind)
        tick = time.perf_counter()
        optimizer.step()
        first = time.perf_counter() - tick
        times = []
        for _ in range(a.steps):
            tick = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - tick)
        print(f"{kind:11s} first step {first:5.1f} s, then {min(times) * 1000:6.0f}-{max(times) * 1000:.0f} ms a step",
              flush=True)
        del optimizer


if __name__ == "__main__":
    main()
