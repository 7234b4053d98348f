"""Fine-tuning speed: the Hugging Face Trainer configured for CPU speed vs tailor's loop.

    .venv/bin/python benchmarks/train_throughput.py --steps 30 --warmup 5

Both sides train SmolLM2-135M-Instruct on the same chitchat samples (max length 256, batch 8,
lr 1e-4, cosine with 3 warmup steps, weight decay 0.01, clipping 1.0, one epoch), each in its own
process so each peak RSS is its own. Printed per side: real (non-padding) tokens/s over the
steps after --warmup, peak RSS, the validation loss of the trained model (scored by the same
function for both), and model FLOPs utilisation against the bf16 matmul peak measured first.
Model FLOPs count every real token; tailor runs a prefix all rows of a batch share once (the chat
template's system prompt), so for tailor the FLOPs actually done are also given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (bf16_matmul_peak, config, emit, machine, model_and_samples, peak_rss_mb,  # noqa: E402
                    prefix_flops_saved, run_child, train_flops)

BATCH, LR, WARMUP_STEPS, WEIGHT_DECAY, VAL = 8, 1e-4, 3, 0.01, 100


def settings(steps: int, threads: int) -> dict:
    return dict(threads=threads, max_length=256, train=steps * BATCH, val=VAL, batch_size=BATCH, learning_rate=LR,
                weight_decay=WEIGHT_DECAY, schedule="cosine", warmup_steps=WARMUP_STEPS, max_grad_norm=1.0,
                precision="bf16", eval_every=0, save_every=0, log_every=1)


def side_hf(steps: int, warmup: int, threads: int) -> dict:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from tailor.eval.score import score

    if threads:
        torch.set_num_threads(threads)  # tailor's side gets the same through train.threads
    cfg = config(**settings(steps, threads))
    model, tokenizer, splits = model_and_samples(cfg)
    features = [{"input_ids": s["input_ids"], "attention_mask": [1] * len(s["input_ids"]), "labels": s["labels"]}
                for s in splits.train]
    # Pads labels with -100, so the loss stays on the responses exactly as tailor's (DataCollatorForLanguageModeling
    # would train on the prompts too).
    pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    per_step: list[list[dict]] = []

    def collate(batch):
        per_step.append(batch)
        return pad(batch)

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            ends.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=BATCH, learning_rate=LR, weight_decay=WEIGHT_DECAY,
            lr_scheduler_type="cosine", warmup_steps=WARMUP_STEPS, max_grad_norm=1.0, num_train_epochs=1,
            bf16=True, use_cpu=True, train_sampling_strategy="group_by_length", logging_steps=1,
            save_strategy="no", report_to="none", seed=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collate,
                          processing_class=tokenizer, callbacks=[Clock()])
        trainer.train()
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    seconds = ends[-1] - ends[warmup]
    steady = [s for batch in per_step[warmup:steps] for s in batch]
    val = score(model, splits.validation, tokenizer.pad_token_id, 16, bf16=True)
    return {"steps": len(ends) - 1, "tokens_per_s": sum(len(s["input_ids"]) for s in steady) / seconds,
            "flops_per_s": train_flops(model.config, steady) / seconds, "peak_rss_mb": peak_rss_mb(),
            "val_loss": val["loss"], "last_train_loss": sum(losses[-5:]) / len(losses[-5:])}


def side_tailor(steps: int, warmup: int, threads: int) -> dict:
    from tailor.tasks import get_task
    from tailor.train.loop import micro_batches, train

    cfg = config(**settings(steps, threads))
    model, tokenizer, splits = model_and_samples(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.output_dir, cfg.name = tmp, "bench"
        result = train(cfg, get_task(cfg.task), model, tokenizer, splits.train, splits.validation, cfg.run_dir)
        log = [json.loads(line) for line in (cfg.run_dir / "log.jsonl").read_text().splitlines()]
    train_log = [r for r in log if r["split"] == "train"]
    val = [r for r in log if r["split"] == "validation"][-1]
    # The loop logs each step's real tokens/s; its batches are a pure function of the seed, so the
    # tokens of each step are known and the step times follow.
    stream = micro_batches([len(s["input_ids"]) for s in splits.train], BATCH, cfg.train.seed, 0)
    batches = [[splits.train[i] for i in next(stream)[1]] for _ in range(result.steps)]
    tokens = [sum(len(s["input_ids"]) for s in b) for b in batches]
    seconds = sum(t / r["tokens_per_second"] for t, r in zip(tokens[warmup:], train_log[warmup:]))
    steady = [s for b in batches[warmup:] for s in b]
    flops = train_flops(model.config, steady)
    return {"steps": result.steps, "tokens_per_s": sum(tokens[warmup:]) / seconds,
            "flops_per_s": flops / seconds, "peak_rss_mb": peak_rss_mb(),
            "done_flops_per_s": (flops - prefix_flops_saved(model.config, batches[warmup:])) / seconds,
            "val_loss": val["loss"], "last_train_loss": sum(r["loss"] for r in train_log[-5:]) / 5}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="optimizer steps (= samples / 8), one epoch")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of tokens/s")
    p.add_argument("--order", default="hf,tailor", help="sides to run, in this order (repeats allowed)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0 = torch's default)")
    p.add_argument("--side", choices=["hf", "tailor"], help=argparse.SUPPRESS)  # a child process
    a = p.parse_args()
    if a.side:
        emit((side_hf if a.side == "hf" else side_tailor)(a.steps, a.warmup, a.threads))
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    print(machine())
    peak = bf16_matmul_peak()
    print(f"bf16 matmul peak: {peak:.0f} GFLOP/s")
    results: dict[str, list[dict]] = {}
    for side in a.order.split(","):
        r = run_child(__file__, ["--side", side, "--steps", str(a.steps), "--warmup", str(a.warmup),
                                        "--threads", str(a.threads)], timeout=1800)
        results.setdefault(side, []).append(r)
        print(f"{side:7s} {r['tokens_per_s']:7.1f} real tok/s  MFU {r['flops_per_s'] / 1e9 / peak:5.1%}  "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB  val loss {r['val_loss']:.4f}  "
              f"last-5 train loss {r['last_train_loss']:.4f}  ({r['steps']} steps)", flush=True)
    if "hf" in results and "tailor" in results:
        hf, tl = results["hf"][-1], results["tailor"][-1]
        print(f"tailor / HF: speed {tl['tokens_per_s'] / hf['tokens_per_s']:.2f}x, "
              f"peak RSS {tl['peak_rss_mb'] / hf['peak_rss_mb']:.2f}x, "
              f"val loss {tl['val_loss'] / hf['val_loss'] - 1:+.2%}, "
              f"tailor MFU {tl['flops_per_s'] / 1e9 / peak:.1%} of the measured bf16 peak "
              f"({tl['done_flops_per_s'] / 1e9 / peak:.1%} counting only the FLOPs done: the shared prefix runs once)")
    print(machine())


if __name__ == "__main__":
    main()
