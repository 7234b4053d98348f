"""One training step's peak memory at a fixed batch shape, with one memory lever off and on.

    .venv/bin/python benchmarks/step_memory.py --lever attention --length 256 --batch 8 --steps 3

Levers: `mlp`, the lean MLP backward (kernels/mlp.py); `attention`, the attention probabilities recomputed
in the backward rather than kept (kernels/attention.py `Recomputed`); `norm`, training's RMSNorm path (the
kernel, or `LeanNorm` where it cannot run: kernels/norm.py) against the module's own forward.

SmolLM2-135M-Instruct, random token ids (the last half of each row supervised), tailor's own step (its CPU
speed paths, the chunked loss, fused AdamW, the precision train.precision auto picks), each setting in its own process so each peak RSS is its own.
Printed per setting: seconds a step (the first step, which allocates the optimizer state, left out when there
are more), the resident memory after the forward (activations held for the backward) and the process's peak.
`train_throughput.py` measures whole runs, whose batches are length-grouped and mostly shorter than this.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, peak_rss_mb, run_child  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def side(lever: str, on: bool, length: int, batch: int, steps: int) -> dict:
    from tailor import device as devices
    from tailor.kernels import attention, patched, paths
    from tailor.models.load import load
    from tailor.train.loop import make_optimizer
    from tailor.train.loss import token_stats

    model, _ = load("smollm2-135m-instruct")
    model.train()
    ids = torch.randint(100, 40000, (batch, length), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, : length // 2] = -100
    rows = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    optimizer = make_optimizer(model, 1e-4, 0.01, [0.9, 0.999])
    half = devices.half_dtype("auto")  # as the loop: bf16 autocast where the CPU has native bf16, fp32 elsewhere
    off = {"mlp": mock.patch.object(paths, "lean_mlps", lambda model, enabled=True: contextlib.nullcontext(False)),
           "norm": mock.patch.object(paths, "fused_norms", lambda model, enabled=True: contextlib.nullcontext(None)),
           "attention": mock.patch.object(attention, "RECOMPUTE", False)}[lever]
    times, held = [], []
    with contextlib.ExitStack() as stack:
        if not on:
            stack.enter_context(off)
        names = stack.enter_context(patched(model, training=True, optimizer=optimizer, half=half))
        for _ in range(steps):
            tick = time.perf_counter()
            with devices.autocast(half):
                nll, n, _ = token_stats(model, rows)
            held.append(rss_mb())
            (nll / n).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - tick)
    timed = times[1:] or times
    return {"paths": names, "precision": str(half or torch.float32).removeprefix("torch."), "seconds_per_step": sum(timed) / len(timed), "after_forward_mb": max(held),
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--length", type=int, default=256, help="tokens a row")
    p.add_argument("--batch", type=int, default=8, help="rows a step")
    p.add_argument("--steps", type=int, default=3, help="steps per setting")
    p.add_argument("--lever", choices=["mlp", "attention", "norm"], default="attention", help="the lever to turn off and on")
    p.add_argument("--order", default="off,on", help="the lever's settings to run, in this order")
    p.add_argument("--side", choices=["off", "on"], help=argparse.SUPPRESS)  # a child process
    args = p.parse_args()
    if args.side:
        emit(side(args.lever, args.side == "on", args.length, args.batch, args.steps))
        return
    print(machine(), flush=True)
    print(f"SmolLM2-135M, train.precision auto, batch {args.batch} x {args.length} tokens, {args.steps} steps")
    results = {}
    for name in args.order.split(","):
        results[name] = r = run_child(__file__, ["--lever", args.lever, "--side", name, "--length", str(args.length), "--batch",
                                                 str(args.batch), "--steps", str(args.steps)], timeout=3600)
        print(f"{args.lever} {name:3}  {r['seconds_per_step']:6.2f} s a step  after forward {r['after_forward_mb']:6.0f} MB"
              f"  peak RSS {r['peak_rss_mb']:6.0f} MB  ({r['precision']}; {', '.join(r['paths']) or 'no speed paths'})", flush=True)
    if {"off", "on"} <= results.keys():
        off, on = results["off"], results["on"]
        print(f"on / off: step time {on['seconds_per_step'] / off['seconds_per_step']:.2f}x, "
              f"peak RSS {on['peak_rss_mb'] - off['peak_rss_mb']:+.0f} MB")


if __name__ == "__main__":
    main()
