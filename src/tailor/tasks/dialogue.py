"""Dialogue response generation: conversations -> windowed samples -> tokenized splits."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from tailor.config import Config
from tailor.data import chat_format
from tailor.data.batches import collate, count_targets  # noqa: F401  (the task's collate and target count)
from tailor.data.dialogue import split_of, windows
from tailor.data.sources import read_conversations
from tailor.data.tokenize import IGNORE, encode_fitting
from tailor.errors import TailorError
from tailor.eval.dialogue import evaluate  # noqa: F401  (the task's test-time evaluation)
from tailor.eval.dialogue import validation_generation
from tailor.eval.score import score
from tailor.models.adapt import adapt
from tailor.models.load import load as load_pretrained
from tailor.models.load import load_model
from tailor.report import metrics_table, side_by_side  # noqa: F401  (the task's console tables)
from tailor.tasks.splits import SPLITS, Splits, cap
from tailor.train.loss import token_stats  # noqa: F401  (the task's training loss)


def prepare(cfg: Config, tokenizer: PreTrainedTokenizerBase, context: int) -> Splits:
    d = cfg.data
    max_length = cfg.model.max_length
    if max_length > context:
        raise TailorError(
            f"model.max_length={max_length} is longer than the model's context of {context} tokens; "
            f"set model.max_length to at most {context}."
        )
    conversations = read_conversations(d.source)
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    conv_count = {s: 0 for s in SPLITS}
    for conv in conversations:
        split = split_of(conv["id"], d.val_fraction, d.test_fraction)
        conv_count[split] += 1
        by_split[split] += windows(conv, d.history_turns, d.system_prompt)
    limits = {"train": d.max_train_samples, "validation": d.max_val_samples, "test": d.max_test_samples}
    out, skipped = {}, 0
    for split in SPLITS:
        if not by_split[split]:
            raise TailorError(
                f"data source {d.source}: the {split} split is empty ({len(conversations)} conversations, "
                f"{conv_count[split]} in {split}, no assistant turn with history). Add data or change "
                "data.val_fraction / data.test_fraction."
            )
        encoded = []
        for sample in cap(by_split[split], limits[split], f"{split}-cap"):
            enc = encode_fitting(tokenizer, sample, max_length)
            if enc is None:
                if d.overlong == "error":
                    raise TailorError(
                        f"{sample['origin']}: a sample is longer than model.max_length={max_length} tokens even "
                        f"with only the last turn as history. Raise model.max_length (the model's context "
                        f"is {context}) or set data.overlong=skip."
                    )
                skipped += 1
                continue
            encoded.append(enc)
        out[split] = encoded
    stats = {
        "conversations": conv_count,
        "samples": {s: len(out[s]) for s in SPLITS},
        "skipped_overlong": skipped,
        "train_tokens": sum(len(s["input_ids"]) for s in out["train"]),
        "train_supervised_tokens": sum(sum(1 for x in s["labels"] if x != IGNORE) for s in out["train"]),
    }
    return Splits(out["train"], out["validation"], out["test"], stats)


def load(cfg: Config):
    model, tokenizer = load_pretrained(cfg.model.name, cfg.model.dtype, cfg.model.cache_dir, cfg.model.quantize)
    added = chat_format.apply(tokenizer, cfg.data.chat_format)  # the template training renders with
    return adapt(model, cfg.model, "causal", cfg.train.seed, added, len(tokenizer)), tokenizer


def load_trained(folder, cfg: Config):
    return load_model(str(folder), cfg.model.dtype)


def sample_record(sample: dict) -> dict:
    return {"messages": sample["messages"]}


def validate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool) -> dict:
    """Teacher-forced scores, plus generation metrics on a fixed sample if eval.val_generate_samples."""
    metrics = score(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, desc="validate")
    return {**metrics, **validation_generation(model, tokenizer, samples, cfg, bf16)}
