"""Teacher-forced scoring of response tokens: loss, perplexity, token accuracy."""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from tailor import device as devices
from tailor.allocator import retain_freed_memory
from tailor.data.batches import collate, sequential
from tailor.precision import autocast, inference_model
from tailor.train.loss import token_stats


@torch.inference_mode()
def score(model, samples: list[dict], pad_id: int, batch_size: int = 16, bf16: bool = False, desc: str = "score") -> dict:
    if devices.is_cpu():
        retain_freed_memory()
    was_training = model.training
    model.eval()
    runner = inference_model(model, bf16)  # bf16 weights cast once, not by autocast in every batch
    nll, tokens, correct = 0.0, 0, 0
    lengths = [len(s["input_ids"]) for s in samples]
    batches = sequential(len(samples), batch_size, lengths)
    prefixes: dict = {}  # e.g. the system prompt: run once for the whole split, the weights being fixed
    for idx in tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        with autocast(bf16 and runner is model):
            total, n, c = token_stats(runner, devices.put(collate([samples[i] for i in idx], pad_id), devices.of(runner)), prefixes)
        nll += float(total)
        tokens += n
        correct += c
    model.train(was_training)
    loss = nll / max(tokens, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "token_accuracy": correct / max(tokens, 1),
        "tokens": tokens,
    }
