"""Dialogue response generation: conversations -> windowed samples -> tokenized splits.

A decoder-only model reads the history and the reply as one text (data.chat_format) and is trained on the
reply; an encoder-decoder (T5, BART, Marian) reads the rendered history in its encoder and learns the
reply in its decoder (tasks/encdec.py).
"""

from __future__ import annotations


from transformers import PreTrainedTokenizerBase

from tailor.config import Config
from tailor.data import chat_format
from tailor.data.content import conversation_key, first_occurrences
from tailor.data.dialogue import split_conversations, windows
from tailor.data.sources import read_conversations
from tailor.data.tokenize import IGNORE, encode_fitting, history_text, prompt_ids
from tailor.errors import TailorError
from tailor.eval import dialogue as causal_eval
from tailor.eval.dialogue import fixed_sample, reference_of
from tailor.eval.metrics import generation_metrics
from tailor.eval.score import score
from tailor.generate.replies import generate
from tailor.models.adapt import adapt
from tailor.tasks import console, encdec
from tailor.tasks.base import train_rows, with_test_data  # noqa: F401  (the task's)
from tailor.tasks.encdec import collate, count_targets, token_stats  # noqa: F401  (the task's, both kinds)
from tailor.tasks.splits import SPLITS, Splits, cap

OUTPUTS = "generated"  # what the run summary calls the test outputs


def encode_seq2seq(tokenizer, messages: list[dict]) -> dict:
    """An encoder-decoder sample: the rendered history in, the reply (and end-of-sequence) out."""
    return encdec.encode(tokenizer, history_text(tokenizer, messages[:-1]), messages[-1]["content"])


def prepare(cfg: Config, tokenizer: PreTrainedTokenizerBase, context: int) -> Splits:
    d = cfg.data
    max_length = cfg.model.max_length
    if max_length > context:
        raise TailorError(
            f"model.max_length={max_length} is longer than the model's context of {context} tokens; "
            f"set model.max_length to at most {context}."
        )
    seq2seq = encdec.kind(cfg) == "seq2seq"
    conversations = read_conversations(d.source, d.format)
    # Split by the conversation's turns, so exact repeats share a split; data.dedupe drops them first.
    carved, _ = split_conversations(conversations, d.val_fraction, d.test_fraction, d.dedupe)
    conv_count = {s: len(carved[s]) for s in SPLITS}
    by_split = {s: [w for conv in carved[s] for w in windows(conv, d.history_turns, d.system_prompt)] for s in SPLITS}
    own = {"validation": d.validation_source, "test": d.test_source}
    for split, source in own.items():
        if source is not None:  # read whole from its own file, as the table tasks do; data.source's share trains
            by_split["train"] += by_split[split]
            conv_count["train"] += conv_count[split]
            theirs = read_conversations(source, d.format)
            if d.dedupe:
                theirs = first_occurrences(theirs, lambda c: conversation_key(c["messages"]))[0]
            conv_count[split] = len(theirs)
            by_split[split] = [w for conv in theirs for w in windows(conv, d.history_turns, d.system_prompt)]
    limits = {"train": d.max_train_samples, "validation": d.max_val_samples, "test": d.max_test_samples}
    out, skipped = {}, {s: 0 for s in SPLITS}
    # Every split is encoded before any is found empty, so an overlong sample is named as such (and not
    # reported as the empty split it leaves behind).
    for split in SPLITS:
        encoded = []
        for sample in cap(by_split[split], limits[split], f"{split}-cap"):
            enc = encode_fitting(tokenizer, sample, max_length, encode_seq2seq if seq2seq else None)
            if enc is None:
                if d.overlong == "error":
                    raise TailorError(
                        f"{sample['origin']}: a sample is longer than model.max_length={max_length} tokens even "
                        f"with only the last turn as history. Raise model.max_length (the model's context "
                        f"is {context}) or set data.overlong=skip."
                    )
                skipped[split] += 1
                continue
            encoded.append(enc)
        out[split] = encoded
    for split in SPLITS:
        if not out[split]:
            dropped = (f", {skipped[split]} sample(s) longer than model.max_length={max_length} skipped"
                       if skipped[split] else "")
            raise TailorError(
                f"data source {own.get(split) or d.source}: the {split} split is empty ({len(conversations)} conversations, "
                f"{conv_count[split]} in {split}, {len(by_split[split])} assistant turn(s) with history{dropped}). "
                "Add data or change data.val_fraction / data.test_fraction."
            )
    stats = {
        "conversations": conv_count,
        "samples": {s: len(out[s]) for s in SPLITS},
        "skipped_overlong": sum(skipped.values()),
        "train_tokens": sum(len(s["input_ids"]) + (len(s["labels"]) if seq2seq else 0) for s in out["train"]),
        "train_supervised_tokens": sum(sum(1 for x in s["labels"] if x != IGNORE) for s in out["train"]),
    }
    return Splits(out["train"], out["validation"], out["test"], stats)


def load(cfg: Config):
    model, tokenizer, kind = encdec.load(cfg)
    added = chat_format.apply(tokenizer, cfg.data.chat_format)  # the template training renders with
    return adapt(model, cfg.model, kind, cfg.train.seed, added, len(tokenizer)), tokenizer


def sample_record(sample: dict) -> dict:
    return {"messages": sample["messages"]}


def reply(model, tokenizer, histories: list[list[dict]], decode, bf16: bool, seed: int = 0, desc: str = "generate") -> list[dict]:
    """Replies to conversation histories, rendered as training rendered them, for a model of either kind:
    {"text", "tokens", "stopped"} each (tailor generate and chat use this)."""
    if getattr(model.config, "is_encoder_decoder", False):
        inputs = [encdec.encoder_ids(tokenizer, history_text(tokenizer, h)) for h in histories]
        return encdec.generate(model, tokenizer, inputs, decode, bf16, seed, desc)
    return generate(model, tokenizer, [prompt_ids(tokenizer, h) for h in histories], decode, bf16, seed=seed, desc=desc)


def seq2seq_replies(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, desc: str) -> tuple[dict, list[dict]]:
    """An encoder-decoder's replies to the samples' histories; (generation metrics, replies)."""
    replies = encdec.generate(model, tokenizer, [s["input_ids"] for s in samples], cfg.decode, bf16, cfg.decode.seed, desc)
    return generation_metrics(replies, [reference_of(s) for s in samples]), replies


def validate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool) -> dict:
    """Teacher-forced scores, plus generation metrics on a fixed sample if eval.val_generate_samples."""
    if not samples or not samples[0].get("seq2seq"):
        metrics = score(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, desc="validate")
        return {**metrics, **causal_eval.validation_generation(model, tokenizer, samples, cfg, bf16)}
    metrics = encdec.teacher_forced(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, "validate")
    if cfg.eval.val_generate_samples:
        chosen = fixed_sample(samples, cfg.eval.val_generate_samples)
        metrics.update(seq2seq_replies(model, tokenizer, chosen, cfg, bf16, "validate: generate")[0])
    return metrics


def evaluate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, label: str = "") -> tuple[dict, list[dict]]:
    """(metrics, replies) where replies cover the first `eval.generate_samples` samples."""
    if not samples or not samples[0].get("seq2seq"):
        return causal_eval.evaluate(model, tokenizer, samples, cfg, bf16, label)
    metrics = encdec.teacher_forced(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16,
                                    f"score {label}".strip())
    prompts = samples[: cfg.eval.generate_samples]
    if not prompts:
        return metrics, []
    generated, replies = seq2seq_replies(model, tokenizer, prompts, cfg, bf16, f"generate {label}".strip())
    return {**metrics, **generated}, replies


# ---------------------------------------------------------------- console


def metrics_table(columns: dict[str, dict]) -> str:
    """Every metric the evaluation reported, in the catalogue's order (tasks/console.py)."""
    present = [r for r in console.ROWS if any(isinstance(c.get(r[0]), (int, float)) for c in columns.values())]
    return console.metrics_table(columns, present)


def side_by_side(samples: list[dict], replies: dict[str, list[dict]], count: int, width: int = 100) -> str:
    """The first `count` test prompts: history, reference and each model's reply."""
    def lines(sample: dict) -> list[str]:
        history = [f"{m['role']}: {m['content']}" for m in sample["messages"][:-1] if m["role"] != "system"]
        return history + [f"[reference] {sample['messages'][-1]['content']}"]

    return console.side_by_side(samples, replies, count, "prompt", lines, width)
