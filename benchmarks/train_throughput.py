"""Fine-tuning speed: the Hugging Face Trainer configured for CPU speed vs tailor's loop.

    .venv/bin/python benchmarks/train_throughput.py --steps 30 --warmup 5

Both sides train SmolLM2-135M-Instruct on the same chitchat samples (max length 256, batch 8,
lr 1e-4, cosine with 3 warmup steps, weight decay 0.01, clipping 1.0, one epoch), each in its own
process so each peak RSS is its own: HF's on glibc's malloc, as a script runs, tailor's on mimalloc, as the
`tailor` command runs (tailor/preload.py; `--hf-allocator` and `--tailor-allocator` change either). Printed per side: real (non-padding) tokens/s over the
steps after --warmup, peak RSS, the validation loss of the trained model (scored by the same
function for both), and model FLOPs utilisation against the matmul peak in the run's precision (common.Peak: the best
of several shapes and repeats, probed before and after the run; a warning when the two probes differ
by more than 10%, i.e. the machine was busy). `--device cuda` runs both sides on the first CUDA GPU (the
Trainer without `use_cpu`, tailor with train.device cuda), with CUDA's largest allocation as the peak memory and
the GPU's bf16 matmul peak for MFU. `--precision` (default auto: tailor's own choice on this CPU,
bf16 where it is native, fp32 where it would be emulated) sets both sides.
Model FLOPs count every real token; tailor runs a prefix all rows of a batch share once (the chat
template's system prompt), so for tailor the FLOPs actually done are also given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Peak, add_device, add_precision, add_side_options, config, emit, half, machine,  # noqa: E402
                    model_and_samples, peak_memory_mb, run_child, tailor_settings, train_hf, train_tailor)

BATCH, LR, WARMUP_STEPS, WEIGHT_DECAY, VAL = 8, 1e-4, 3, 0.01, 100


def settings(steps: int, threads: int, bf16: bool, device: str = "cpu") -> dict:
    return dict(device=device, threads=threads, max_length=256, train=steps * BATCH, val=VAL, batch_size=BATCH, learning_rate=LR,
                weight_decay=WEIGHT_DECAY, schedule="cosine", warmup_steps=WARMUP_STEPS, max_grad_norm=1.0,
                precision="bf16" if bf16 else "fp32", eval_every=0, save_every=0, log_every=1)


def side_hf(steps: int, warmup: int, threads: int, bf16: bool, device: str = "cpu") -> dict:
    from tailor import device as devices
    from tailor.eval.score import score

    if threads:
        torch.set_num_threads(threads)  # tailor's side gets the same through train.threads
    devices.choose(device)  # where score() puts the validation batches
    cfg = config(**settings(steps, threads, bf16, device))
    model, tokenizer, splits = model_and_samples(cfg)
    result = train_hf(model, tokenizer, splits.train, steps, warmup, BATCH, LR, WEIGHT_DECAY, WARMUP_STEPS, bf16=bf16,
                      device=device)
    val = score(model, splits.validation, tokenizer.pad_token_id, 16, bf16=bf16)
    return {**result, "val_loss": val["loss"], "peak_rss_mb": peak_memory_mb(device)}


def side_tailor(steps: int, warmup: int, threads: int, bf16: bool, device: str = "cpu", extra: dict | None = None) -> dict:
    from tailor import device as devices

    devices.choose(device)  # as the workflow does from train.device
    cfg = config(**{**settings(steps, threads, bf16, device), **(extra or {})})
    model, tokenizer, splits = model_and_samples(cfg)
    return train_tailor(cfg, model, tokenizer, splits.train, splits.validation, warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="optimizer steps (= samples / 8), one epoch")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of tokens/s")
    p.add_argument("--order", default="hf,tailor", help="sides to run, in this order (repeats allowed)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0 = torch's default)")
    add_side_options(p, "optimizer=adamw_bf16")
    add_precision(p)
    add_device(p)
    p.add_argument("--side", choices=["hf", "tailor"], help=argparse.SUPPRESS)  # a child process
    a = p.parse_args()
    if a.side:
        extra = {} if a.side == "hf" else {"extra": tailor_settings(a.set)}
        from tailor.preload import name

        result = (side_hf if a.side == "hf" else side_tailor)(a.steps, a.warmup, a.threads, half(a.precision, a.device),
                                                              a.device, **extra)
        emit({**result, "allocator": name()})
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    bf16 = half(a.precision, a.device)
    memory = "peak GPU memory" if a.device == "cuda" else "peak RSS"
    print(machine() + f"; {'bf16' if bf16 else 'fp32'} on both sides, on the {a.device.upper()}")
    peak = Peak(bf16, a.device)  # probed before the run and again after it
    results: dict[str, list[dict]] = {}
    for side in a.order.split(","):
        r = run_child(__file__, ["--side", side, "--steps", str(a.steps), "--warmup", str(a.warmup),
                                        "--threads", str(a.threads), "--precision", a.precision, "--device", a.device]
                        + [arg for s in a.set for arg in ("--set", s)], timeout=1800,
                        allocator=a.hf_allocator if side == "hf" else a.tailor_allocator)
        results.setdefault(side, []).append(r)
        print(f"{side:7s} {r['tokens_per_s']:7.1f} real tok/s  {memory} {r['peak_rss_mb']:6.0f} MB  "
              f"val loss {r['val_loss']:.4f}  last-5 train loss {r['last_train_loss']:.4f}  ({r['steps']} steps, "
              f"{r['allocator']})", flush=True)
    peak.after()
    print(peak.describe())
    for side, runs in results.items():
        print(f"{side:7s} MFU " + ", ".join(f"{r['flops_per_s'] / 1e9 / peak.value:5.1%}" for r in runs))
    if "hf" in results and "tailor" in results:
        hf, tl = results["hf"][-1], results["tailor"][-1]
        print(f"tailor / HF: speed {tl['tokens_per_s'] / hf['tokens_per_s']:.2f}x, "
              f"{memory} {tl['peak_rss_mb'] / hf['peak_rss_mb']:.2f}x, "
              f"val loss {tl['val_loss'] / hf['val_loss'] - 1:+.2%}, "
              f"tailor MFU {tl['flops_per_s'] / 1e9 / peak.value:.1%} of the measured {'bf16' if peak.dtype == torch.bfloat16 else 'fp32'} peak "
              f"({tl['done_flops_per_s'] / 1e9 / peak.value:.1%} counting only the FLOPs done"
              + (": the shared prefix runs once)" if a.device == "cpu" else ")"))
    print(machine())

if __name__ == "__main__":
    main()
