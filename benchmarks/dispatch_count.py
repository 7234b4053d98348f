"""Operations a training forward and backward dispatches: a proxy, measurable on a CPU, for the kernels a GPU
step launches (where a small model's step waits on the host: BENCHMARKS.md, NVIDIA H200).

    .venv/bin/python benchmarks/dispatch_count.py [--batch 8]

Counts every ATen operation that reaches a backend (a `TorchDispatchMode`) for one forward and backward over
`--batch` chitchat samples of SmolLM2-135M-Instruct under bf16 autocast, on the plain path (no CPU speed paths):
tailor's loss (`train/loss.py`) with the shared-prefix pass and without it, and the Hugging Face model's own
loss (`model(..., labels=...)`), as the Trainer computes it.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import config, model_and_samples  # noqa: E402

from tailor.models import prefix  # noqa: E402
from tailor.tasks import get_task  # noqa: E402
from tailor.train.loss import token_stats  # noqa: E402


class Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="samples in the batch")
    a = p.parse_args()
    model, tokenizer, splits = model_and_samples(config(train=max(64, a.batch)))
    model.train()
    batch = get_task("dialogue").collate(splits.train[:a.batch], tokenizer.pad_token_id)
    print(f"batch {tuple(batch['input_ids'].shape)}; the rows share {prefix.shared_length(batch)} leading tokens")

    def tailor_step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nll, n, _ = token_stats(model, batch)
        (nll / n).backward()

    def hf_step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
        loss.backward()

    for name, step, shortest in [("tailor, shared prefix run once", tailor_step, prefix.MIN_SHARED),
                                 ("tailor, one pass (off the CPU)", tailor_step, 10**9),
                                 ("HF model(labels=...)", hf_step, prefix.MIN_SHARED)]:
        with mock.patch.object(prefix, "MIN_SHARED", shortest):
            step()  # warm-up: lazy initialisations dispatch too
            model.zero_grad(set_to_none=True)
            with Count() as count:
                step()
            model.zero_grad(set_to_none=True)
        print(f"{name:32s} {sum(count.ops.values()):6d} operations; most: "
              + ", ".join(f"{op.split('.')[-1]} {n}" for op, n in count.ops.most_common(5)))


if __name__ == "__main__":
    main()
