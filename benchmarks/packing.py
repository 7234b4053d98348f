"""Packed vs unpacked fine-tuning batches: real tokens/s of the same samples trained both ways.

    .venv/bin/python benchmarks/packing.py --samples 128 --rounds 3

SmolLM2-135M-Instruct on chitchat dialogue samples (max length 256, bf16 autocast, tailor's CPU speed
paths and grouped attention, as `tailor train` runs them). Each round trains the same `--samples`
samples three ways: unpacked (length-grouped batches of `--batch` samples, the shared system prompt run
once a batch), packed (data/packing.py: rows of up to max length, `--batch` rows a batch, a block-diagonal
mask), and unpacked in batches of as many samples as `--batch` packed rows hold (the same tokens a step:
what packing gains beyond a larger batch). The three alternate in one process, so a busy machine slows
them alike. Printed per round and in total: real (non-padding) tokens/s, with the forward+backward and the
optimizer steps timed apart (packed rows take fewer optimizer steps for the same samples), by the wall
clock and by this process's CPU time (less moved by other processes on a shared machine), and the median
of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import config, machine, model_and_samples  # noqa: E402

from tailor import device as devices  # noqa: E402
from tailor.data.batches import collate, length_grouped  # noqa: E402
from tailor.data.packing import pack  # noqa: E402
from tailor.kernels import patched  # noqa: E402
from tailor.train.loop import clip_and_step, make_optimizer  # noqa: E402
from tailor.train.loss import token_stats  # noqa: E402


def epoch(model, optimizer, rows: list[dict], batch_size: int, pad_id: int, seed: int) -> dict:
    """One pass over `rows` in length-grouped batches, as the loop makes them; seconds spent where."""
    forward_backward = stepping = 0.0
    tokens = 0
    cpu = time.process_time()
    for idx in length_grouped([len(r["input_ids"]) for r in rows], batch_size, seed, 0):
        batch = collate([rows[i] for i in idx], pad_id)
        targets = int((batch["labels"][:, 1:] != -100).sum())
        tick = time.perf_counter()
        with devices.autocast(torch.bfloat16, devices.of(model)):
            nll, _, _ = token_stats(model, batch)
        (nll / max(targets, 1)).backward()
        mid = time.perf_counter()
        clip_and_step(model, optimizer, 1.0)
        optimizer.zero_grad(set_to_none=True)
        stepping += time.perf_counter() - mid
        forward_backward += mid - tick
        tokens += sum(len(rows[i]["input_ids"]) for i in idx)
    return {"tokens": tokens, "forward_backward": forward_backward, "optimizer": stepping,
            "cpu": time.process_time() - cpu, "steps": -(-len(rows) // batch_size)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=128, help="training samples each round trains on, both ways")
    p.add_argument("--rounds", type=int, default=3, help="alternations of unpacked and packed")
    p.add_argument("--batch", type=int, default=8, help="samples (unpacked) or packed rows per batch")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config(max_length=args.max_length, train=args.samples, val=1, test=1)
    cfg.data.packing = False  # the samples as they are; packed here below
    model, tokenizer, splits = model_and_samples(cfg)
    samples = splits.train
    rows = pack(samples, args.max_length)
    real = sum(len(s["input_ids"]) for s in samples)
    print(machine())
    print(f"{len(samples)} samples, {real} tokens (mean {real / len(samples):.0f}); packed into {len(rows)} rows "
          f"of up to {args.max_length} ({real / (len(rows) * args.max_length):.0%} full)")
    model.train()
    optimizer = make_optimizer(model, 1e-5, 0.01, [0.9, 0.999])
    # Packed rows put more tokens in a step: the third arm is unpacked batches of as many tokens, which tells
    # what the block-diagonal rows gain beyond a larger batch.
    matched = max(args.batch, round(args.batch * len(samples) / len(rows)))
    arms = [("unpacked", samples, args.batch), ("packed", rows, args.batch), (f"unpacked x{matched}", samples, matched)]
    totals = {name: [] for name, _, _ in arms}
    threads = torch.get_num_threads()
    with patched(model, training=True, optimizer=optimizer, half=torch.bfloat16):
        for _, data, size in arms:  # warm up
            epoch(model, optimizer, data[:size], size, tokenizer.pad_token_id, 0)
        for r in range(args.rounds):
            for name, data, size in arms:
                out = epoch(model, optimizer, data, size, tokenizer.pad_token_id, r)
                totals[name].append(out)
                seconds = out["forward_backward"] + out["optimizer"]
                print(f"round {r + 1} {name:>12}: {out['tokens'] / seconds:6.1f} real tok/s, "
                      f"{out['tokens'] / out['cpu'] * threads:6.1f} by CPU time ({out['steps']} steps, forward+backward "
                      f"{out['forward_backward']:.1f} s, optimizer {out['optimizer']:.1f} s)", flush=True)
    rate, by_cpu = {}, {}
    for name, outs in totals.items():
        tokens = sum(o["tokens"] for o in outs)
        rate[name] = tokens / sum(o["forward_backward"] + o["optimizer"] for o in outs)
        by_cpu[name] = tokens / sum(o["cpu"] for o in outs) * threads
        fb = tokens / sum(o["forward_backward"] for o in outs)
        print(f"{name:>12}: {rate[name]:.1f} real tok/s in all ({fb:.1f} counting forward+backward only; "
              f"{by_cpu[name]:.1f} by CPU time / {threads} threads)")

    def speed(out: dict) -> float:
        return out["tokens"] / (out["forward_backward"] + out["optimizer"])

    for other in [name for name, _, _ in arms if name != "packed"]:
        ratios = sorted(speed(p) / speed(u) for u, p in zip(totals[other], totals["packed"]))
        print(f"packed / {other}: {rate['packed'] / rate[other]:.3f} (wall, all rounds), "
              f"{statistics.median(ratios):.3f} (median of the rounds' ratios: {', '.join(f'{x:.2f}' for x in ratios)}), "
              f"{by_cpu['packed'] / by_cpu[other]:.3f} (CPU time)")


if __name__ == "__main__":
    main()
