"""Evaluation speed: validation perplexity with HF `Trainer.evaluate` vs tailor's `score`.

    .venv/bin/python benchmarks/eval_throughput.py --samples 500

The same validation samples (chitchat, max length 256), batch 16, loss on the responses only
(DataCollatorForSeq2Seq pads labels with -100). HF is configured as for training: `bf16` (per `--precision`),
`use_cpu=True`, length-grouped sampling (which 5.x applies to evaluation too); `--hf-bf16-eval`
adds `bf16_full_eval=True`. Both run in this one process, HF first, then tailor, then (with
--rounds 2) again. Perplexities differ a little by definition: HF averages per-batch mean losses,
tailor averages over all supervised tokens.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_precision, config, half, machine, model_and_samples  # noqa: E402

from tailor.eval.score import score  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--rounds", type=int, default=1, help="HF-then-tailor rounds; the ratio uses the sums")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--hf-bf16-eval", action="store_true", help="also bf16_full_eval=True on the HF side")
    add_precision(p)
    a = p.parse_args()
    bf16 = half(a.precision)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(machine() + f"; {'bf16' if bf16 else 'fp32'} on both sides")
    model, tokenizer, splits = model_and_samples(config(max_length=256, val=a.samples))
    samples = splits.validation
    n = len(samples)  # the cap takes whole conversations' windows, so it can land a few short of --samples
    features = [{"input_ids": s["input_ids"], "attention_mask": [1] * len(s["input_ids"]), "labels": s["labels"]}
                for s in samples]
    tokens = sum(len(s["input_ids"]) for s in samples)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=16, bf16=bf16, use_cpu=True,
                                 bf16_full_eval=a.hf_bf16_eval, train_sampling_strategy="group_by_length",
                                 report_to="none", disable_tqdm=True)
        trainer = Trainer(model=model, args=args, eval_dataset=features, processing_class=tokenizer,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
        t_hf = t_ours = 0.0
        for _ in range(a.rounds):
            tick = time.perf_counter()
            hf = trainer.evaluate()
            t_hf += time.perf_counter() - tick
            model.float()  # bf16_full_eval leaves the weights in bf16
            tick = time.perf_counter()
            ours = score(model, samples, tokenizer.pad_token_id, batch_size=16, bf16=bf16)
            t_ours += time.perf_counter() - tick
            print(f"HF      perplexity {math.exp(hf['eval_loss']):7.3f}  {n / (t_hf / (_ + 1)):6.2f} samples/s"
                  f"  {tokens / (t_hf / (_ + 1)):6.0f} tok/s", flush=True)
            print(f"tailor  perplexity {ours['perplexity']:7.3f}  {n / (t_ours / (_ + 1)):6.2f} samples/s"
                  f"  {tokens / (t_ours / (_ + 1)):6.0f} tok/s", flush=True)
    print(f"tailor / HF Trainer.evaluate: {t_hf / t_ours:.2f}x faster over {n} samples ({tokens} tokens)")
    print(machine())


if __name__ == "__main__":
    main()
