"""Evaluate a chat model on dialogue samples: teacher-forced scores plus generated replies."""

from __future__ import annotations

from statistics import mean

from tailor.config import Config
from tailor.data.tokenize import prompt_ids
from tailor.eval.score import score
from tailor.generate.replies import generate


def history_of(sample: dict) -> list[dict]:
    return sample["messages"][:-1]


def evaluate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, label: str = "") -> tuple[dict, list[dict]]:
    """(metrics, replies) where replies cover the first `eval.generate_samples` samples."""
    metrics = score(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, desc=f"score {label}".strip())
    prompts = samples[: cfg.eval.generate_samples]
    replies = generate(model, tokenizer, [prompt_ids(tokenizer, history_of(s)) for s in prompts], cfg.decode, bf16,
                       seed=cfg.train.seed, desc=f"generate {label}".strip())
    if replies:
        metrics["response_tokens"] = mean(r["tokens"] for r in replies)
        metrics["stop_rate"] = mean(1.0 if r["stopped"] else 0.0 for r in replies)
    return metrics, replies
