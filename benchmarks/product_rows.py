"""The training products' speed by rows: what train.max_pass_tokens (passes of 1,024 tokens) gives up.

    .venv/bin/python benchmarks/product_rows.py [--rounds 3]

SmolLM2-135M's projection shapes (576 -> 576, 192, 1536, 3072; 1536 -> 576) at 512, 1,024 and 2,048 rows, fp32, each
as the forward product and the backward's two (input and weight gradients). Prints GFLOP/s per row count per round.
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 3072)]


def gflops(rows: int, reps: int = 6) -> float:
    seconds, flops = 0.0, 0
    for k, n in SHAPES:
        a, b, g = torch.randn(rows, k), torch.randn(k, n), torch.randn(rows, n)
        for _ in range(2):  # warm-up: oneDNN builds each shape's product once
            a @ b, g @ b.t(), a.t() @ g
        tick = time.perf_counter()
        for _ in range(reps):
            a @ b, g @ b.t(), a.t() @ g
        seconds += time.perf_counter() - tick
        flops += 3 * 2 * rows * k * n * reps
    return flops / seconds / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    for _ in range(a.rounds):
        print("  ".join(f"{rows} rows {gflops(rows):6.1f} GFLOP/s" for rows in (512, 1024, 2048)), flush=True)


if __name__ == "__main__":
    main()
