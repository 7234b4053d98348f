"""Evaluate a chat model on dialogue samples: teacher-forced scores plus generated replies.

Generation is streamed in batches of `decode.batch_size`; only the reply texts are kept (never
logits), and the metrics of `tailor.eval.metrics.generation_metrics` are computed from them.
"""

from __future__ import annotations

import random

from tailor.config import Config
from tailor.data.tokenize import prompt_ids
from tailor.eval.metrics import generation_metrics
from tailor.eval.score import score
from tailor.generate.replies import generate


def history_of(sample: dict) -> list[dict]:
    return sample["messages"][:-1]


def reference_of(sample: dict) -> str:
    return sample["messages"][-1]["content"]


def fixed_sample(samples: list[dict], count: int, salt: str = "val-generate") -> list[dict]:
    """The same `count` samples every time (a seeded draw, not the first ones: those are often one conversation)."""
    if count >= len(samples):
        return list(samples)
    picked = sorted(random.Random(salt).sample(range(len(samples)), count))
    return [samples[i] for i in picked]


def generate_and_measure(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, desc: str) -> tuple[dict, list[dict]]:
    """Reply to each sample's history; (generation metrics against the references, replies)."""
    replies = generate(model, tokenizer, [prompt_ids(tokenizer, history_of(s)) for s in samples], cfg.decode, bf16,
                       seed=cfg.decode.seed, desc=desc)
    return generation_metrics(replies, [reference_of(s) for s in samples]), replies


def validation_generation(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool) -> dict:
    """Generation metrics on the fixed validation sample (empty when eval.val_generate_samples is 0)."""
    if not cfg.eval.val_generate_samples:
        return {}
    chosen = fixed_sample(samples, cfg.eval.val_generate_samples)
    metrics, _ = generate_and_measure(model, tokenizer, chosen, cfg, bf16, desc="validate: generate")
    return metrics


def evaluate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, label: str = "") -> tuple[dict, list[dict]]:
    """(metrics, replies) where replies cover the first `eval.generate_samples` samples."""
    metrics = score(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, desc=f"score {label}".strip())
    prompts = samples[: cfg.eval.generate_samples]
    if not prompts:
        return metrics, []
    generated, replies = generate_and_measure(model, tokenizer, prompts, cfg, bf16, desc=f"generate {label}".strip())
    metrics.update(generated)
    return metrics, replies
