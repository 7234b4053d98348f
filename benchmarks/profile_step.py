"""Where a training step, a decoding step and a scoring batch spend their time (torch.profiler).

    .venv/bin/python benchmarks/profile_step.py --what train --threads 1

Uses tailor's own pieces (collate, token_stats, the loop's optimizer, the fast decoder) on
chitchat samples; prints the profiler's table of operators by self CPU time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import config, machine, model_and_samples  # noqa: E402

from tailor.allocator import retain_freed_memory  # noqa: E402
from tailor.data.batches import collate, length_grouped  # noqa: E402
from tailor.data.tokenize import prompt_ids  # noqa: E402
from tailor.eval.score import score  # noqa: E402
from tailor.generate.decoder import decode  # noqa: E402
from tailor.precision import autocast, inference_model  # noqa: E402
from tailor.train.loop import clip_and_step, make_optimizer  # noqa: E402
from tailor.train.loss import token_stats  # noqa: E402
from tailor.kernels import patched  # noqa: E402
from tailor.kernels.embedding import densify  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=["train", "generate", "score"], default="train")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--shapes", action="store_true", help="one row per operator and input shapes")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    retain_freed_memory()  # as training and scoring run
    print(machine())
    model, tokenizer, splits = model_and_samples(config(max_length=256, train=64, test=16, val=64))
    pad = tokenizer.pad_token_id
    if a.what == "train":
        optimizer = make_optimizer(model, 1e-4, 0.01, [0.9, 0.999])
        batches = [collate([splits.train[i] for i in idx], pad)
                   for idx in length_grouped([len(s["input_ids"]) for s in splits.train], a.batch, 0, 0)]

        def step(batch):
            with autocast(True):
                nll, n, _ = token_stats(model, batch)
            (nll / n).backward()
            densify(model)
            clip_and_step(model, optimizer, 1.0)
            optimizer.zero_grad(set_to_none=True)

        # As train() runs one process under bf16: the head's buffers, the sparse embedding gradient, the kernels.
        with patched(model, training=True, optimizer=optimizer, half=torch.bfloat16):
            for b in batches[:6]:  # warm up, the profiled batches too: the optimizer state and the heap's pages
                step(b)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=a.shapes) as prof:
                for b in batches[4:6]:
                    step(b)
    elif a.what == "generate":
        runner = inference_model(model, True)
        prompts = [prompt_ids(tokenizer, s["messages"][:-1]) for s in splits.test[:a.batch]]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in prompts])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in prompts])
        gen = GenerationConfig(max_new_tokens=32, do_sample=False, eos_token_id=[len(tokenizer) + 1], pad_token_id=pad)
        decode(runner, ids, mask, gen)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=a.shapes) as prof:
            decode(runner, ids, mask, gen)
    else:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=a.shapes) as prof:
            score(model, splits.validation, pad, 16, bf16=True)
    print(prof.key_averages(group_by_input_shape=a.shapes).table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
