"""The loss on a chunk of bf16 logits, forward and backward: log_softmax + nll_loss (the old path) vs
train/cross_entropy.py's blockwise summed cross-entropy.

    .venv/bin/python benchmarks/cross_entropy.py [--rows 512] [--vocab 49152] [--repeats 5]

Prints the best of --repeats for each side's forward and backward, twice in alternation, and the largest
difference between the two gradients.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from tailor.train.cross_entropy import summed_cross_entropy  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=512, help="supervised positions in the chunk")
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(machine())
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab, generator=gen) * 3).to(torch.bfloat16)
    targets = torch.randint(0, args.vocab, (args.rows,), generator=gen)
    sides = {"log_softmax + nll_loss": lambda x: F.nll_loss(F.log_softmax(x, -1, dtype=torch.float32), targets,
                                                             reduction="sum"),
             "blockwise": lambda x: summed_cross_entropy(x, targets)}
    grads = {}
    for name in list(sides) * 2:
        forward, backward = [], []
        for _ in range(args.repeats):
            x = logits.clone().requires_grad_()
            start = time.perf_counter()
            loss = sides[name](x)
            middle = time.perf_counter()
            (loss * 0.01).backward()
            forward.append(middle - start)
            backward.append(time.perf_counter() - middle)
            grads[name] = x.grad
        print(f"{name:24} forward {1e3 * min(forward):6.1f} ms  backward {1e3 * min(backward):6.1f} ms  "
              f"loss {float(loss.detach()):.3f}")
    a, b = grads.values()
    print(f"largest gradient difference {(a.float() - b.float()).abs().max().item():.3g}")


if __name__ == "__main__":
    main()
