"""How fast can batch-1 decoding be, with the arithmetic HF generate does? The weights' floor.

    .venv/bin/python benchmarks/decode_bound.py

A decoding step at batch 1 multiplies one vector by every weight matrix of the model. This times
(a) one step of the model's forward with a KV cache (bf16 weights, what HF generate runs per new
token) and (b) the same 211 matrix-vector products alone, back to back, with torch's fastest
kernel here (F.linear; torch.mv and a transposed layout measured slower). (b) is a floor for any
decoder that does the same arithmetic: a loop with no overhead at all would be (a)/(b) times faster
than HF generate. Also printed: the bandwidth each reaches, against the weights' bytes.
Since session 5 tailor's decoding does not use F.linear: `tailor/kernels/matmul.py` does the same
arithmetic on weights packed once, at the memory's speed (BENCHMARKS.md), so (b) is F.linear's floor,
not tailor's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL, machine  # noqa: E402

from tailor.models.load import load  # noqa: E402


def best_of(fn, repeats: int, rounds: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        tick = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - tick) / repeats)
    return best


@torch.inference_mode()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(machine())
    model, tokenizer = load(MODEL)
    model = model.to(torch.bfloat16).eval()
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    nbytes = sum(w.numel() * w.element_size() for w in weights)
    inputs = {w.shape[1]: torch.randn(1, w.shape[1], dtype=torch.bfloat16) for w in weights}

    def linears():
        for w in weights:
            F.linear(inputs[w.shape[1]], w)

    ids = tokenizer("Hello there, how are you doing today? I wanted to ask you about cars.", return_tensors="pt").input_ids
    out = model(ids, use_cache=True)
    state = {"cache": out.past_key_values, "next": out.logits[:, -1:].argmax(-1)}

    def step():
        out = model(state["next"], past_key_values=state["cache"], use_cache=True)
        state["cache"], state["next"] = out.past_key_values, out.logits[:, -1:].argmax(-1)

    t_step = best_of(step, 10)
    t_linear = best_of(linears, 10)
    print(f"{len(weights)} linear layers, {nbytes / 1e6:.0f} MB of bf16 weights")
    print(f"forward step with KV cache: {t_step * 1e3:6.2f} ms  ({nbytes / t_step / 1e9:5.1f} GB/s of weights)")
    print(f"the linear layers alone:    {t_linear * 1e3:6.2f} ms  ({nbytes / t_linear / 1e9:5.1f} GB/s)")
    print(f"ceiling for a decoder with the same arithmetic: {t_step / t_linear:.2f}x the forward step")


if __name__ == "__main__":
    main()
