"""Free text generation with a decoder-only model, from one of two kinds of records:

- prompt -> completion pairs ({"prompt", "completion"}; style or topic generation): the prompt goes
  through `data.template` (default "{prompt}"), the loss is on the completion and its end token;
- raw text ({"text"}; continued training on a corpus, e.g. a .txt file, one document per line):
  every token is trained on. With `data.pack` (default) the documents of a split are joined, each
  followed by the end-of-sequence token, and cut into full `model.max_length` sequences, so no
  compute goes to padding; otherwise each document is one sample, cut at max_length.

Test metrics: teacher-forced loss / perplexity / token accuracy, and generations for the first
`eval.generate_samples` prompts (for raw text: the first `PROMPT_TOKENS` tokens of a sequence), with
ROUGE-L against the reference continuation (for raw text: up to the end of the current document).
"""

from __future__ import annotations

from statistics import mean

from tailor.config import Config
from tailor.data import chat_format
from tailor.data.batches import collate, count_targets  # noqa: F401  (the task's collate and target count)
from tailor.data.prompts import check_template, encode_pair, prompt_ids, render
from tailor.data.tables import read_rows
from tailor.data.tokenize import IGNORE
from tailor.errors import TailorError
from tailor.eval.metrics import rouge
from tailor.eval.score import score
from tailor.generate.replies import generate
from tailor.models.adapt import adapt
from tailor.models.load import load as load_pretrained
from tailor.tasks import console
from tailor.tasks import base
from tailor.tasks.base import with_test_data  # noqa: F401  (the task's)
from tailor.tasks.splits import SPLITS, Splits, cap, check_context, limits, load_records, text_field
from tailor.train.loss import token_stats  # noqa: F401  (the task's training loss)

PROMPT_TOKENS = 16
OUTPUTS = "generated"  # what the run summary calls the test outputs


def is_pairs(cfg: Config) -> bool:
    """Prompt/completion records when the first training row has a completion column, else raw text."""
    rows = read_rows(cfg.data.source, "train")[:1]
    if not rows:
        raise TailorError(f"data source {cfg.data.source} holds no rows.")
    return cfg.data.columns.get("completion", "completion") in rows[0]["values"]


def load(cfg: Config):
    model, tokenizer = load_pretrained(cfg.model.name, cfg.model.dtype, cfg.model.cache_dir, cfg.model.quantize)
    added = chat_format.apply(tokenizer, cfg.data.chat_format) if cfg.data.chat_template else []
    return adapt(model, cfg.model, "causal", cfg.train.seed, added, len(tokenizer)), tokenizer


def pack(docs: list[list[int]], length: int, origins: list[str]) -> list[dict]:
    """Concatenate token lists and cut them into blocks of `length` (the last block may be shorter; a
    last block of one token, which has nothing to predict, is dropped).

    >>> [b["input_ids"] for b in pack([[1, 2, 3], [4, 5]], 2, ["a", "b"])]
    [[1, 2], [3, 4]]
    """
    stream, where = [], []
    for doc, origin in zip(docs, origins):
        stream += doc
        where += [origin] * len(doc)
    blocks = []
    for start in range(0, len(stream), length):
        ids = stream[start : start + length]
        if len(ids) >= 2:
            blocks.append({"input_ids": ids, "labels": list(ids), "origin": where[start], "text": None})
    return blocks


def continuation(ids: list[int], eos: int) -> list[int]:
    """The reference for a generation after a packed prompt: the rest of the current document only
    (a packed window runs on into the next documents, which no model could be expected to write).

    >>> continuation([5, 6, 2, 7, 8], 2)
    [5, 6]
    """
    return ids[: ids.index(eos)] if eos in ids else ids


def prepare_raw(cfg: Config, tokenizer, records: dict[str, list[dict]]) -> tuple[dict, dict]:
    eos, n = tokenizer.eos_token_id, cfg.model.max_length
    out, truncated = {}, 0
    for split in SPLITS:
        texts = [(text_field(r, "text"), r["origin"]) for r in records[split]]  # a number is an error, not a crash
        docs = [(tokenizer(text, add_special_tokens=False)["input_ids"] + [eos], origin)
                for text, origin in texts if text.strip()]
        if cfg.data.pack:
            samples = pack([d for d, _ in docs], n, [o for _, o in docs])
        else:
            truncated += sum(1 for d, _ in docs if len(d) > n)
            samples = [{"input_ids": d[:n], "labels": d[:n], "origin": o, "text": None} for d, o in docs if len(d[:n]) >= 2]
        for s in samples:
            s["prompt_ids"] = s["input_ids"][:PROMPT_TOKENS]
            s["reference"] = tokenizer.decode(continuation(s["input_ids"][PROMPT_TOKENS:], eos), skip_special_tokens=True)
            s["prompt"] = tokenizer.decode(s["prompt_ids"], skip_special_tokens=True)
        out[split] = cap(samples, limits(cfg)[split], f"{split}-cap")
    return out, {"mode": "raw text, packed" if cfg.data.pack else "raw text", "truncated_documents": truncated}


def prepare_pairs(cfg: Config, tokenizer, records: dict[str, list[dict]]) -> tuple[dict, dict]:
    template = cfg.data.template or "{prompt}"
    check_template(template, ["prompt"])
    out, skipped = {}, 0
    for split in SPLITS:
        encoded = []
        for r in cap(records[split], limits(cfg)[split], f"{split}-cap"):
            prompt = render(template, {"prompt": text_field(r, "prompt")})
            completion = text_field(r, "completion")
            enc = encode_pair(tokenizer, prompt, completion, cfg.data.chat_template)
            if len(enc["input_ids"]) > cfg.model.max_length:
                if cfg.data.overlong == "error":
                    raise TailorError(f"{r['origin']}: prompt + completion is longer than model.max_length="
                                      f"{cfg.model.max_length} tokens. Raise it or set data.overlong=skip.")
                skipped += 1
                continue
            encoded.append({**enc, "prompt": prompt, "reference": completion, "origin": r["origin"],
                            "prompt_ids": prompt_ids(tokenizer, prompt, cfg.data.chat_template)})
        out[split] = encoded
    return out, {"mode": "prompt -> completion", "template": template, "skipped_overlong": skipped}


def train_rows(cfg: Config, samples: list[dict]) -> list[dict]:
    """Prompt/completion pairs and unpacked documents packed per data.packing (tasks/base.py); raw text that
    data.pack already cut into full rows, as it is."""
    return samples if cfg.data.pack and not is_pairs(cfg) else base.train_rows(cfg, samples)


def prepare(cfg: Config, tokenizer, context: int) -> Splits:
    check_context(cfg, context)
    if is_pairs(cfg):
        out, extra = prepare_pairs(cfg, tokenizer, load_records(cfg, ["prompt", "completion"], key_fields=["prompt", "completion"]))
    else:
        out, extra = prepare_raw(cfg, tokenizer, load_records(cfg, ["text"]))
    for split in SPLITS:
        if not out[split]:
            raise TailorError(f"data source {cfg.data.source}: the {split} split has no sample after tokenization.")
    stats = {
        **extra,
        "samples": {s: len(out[s]) for s in SPLITS},
        "train_tokens": sum(len(s["input_ids"]) for s in out["train"]),
        "train_supervised_tokens": sum(sum(1 for x in s["labels"][1:] if x != IGNORE) for s in out["train"]),
    }
    return Splits(out["train"], out["validation"], out["test"], stats)


def validate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool) -> dict:
    return score(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, desc="validate")


def evaluate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, label: str = "") -> tuple[dict, list[dict]]:
    metrics = score(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, desc=f"score {label}".strip())
    prompts = samples[: cfg.eval.generate_samples]
    outputs = generate(model, tokenizer, [s["prompt_ids"] for s in prompts], cfg.decode, bf16, seed=cfg.decode.seed,
                       desc=f"generate {label}".strip())
    if outputs:
        metrics["response_tokens"] = mean(o["tokens"] for o in outputs)
        metrics["stop_rate"] = mean(1.0 if o["stopped"] else 0.0 for o in outputs)
        metrics["rougeL"] = rouge([o["text"] for o in outputs], [s["reference"] for s in prompts])["rougeL"]
    return metrics, outputs


ROWS = [("perplexity", "perplexity (trained tokens)", "{:.2f}"), ("token_accuracy", "token accuracy", "{:.3f}"),
        ("loss", "loss", "{:.4f}"), ("rougeL", "ROUGE-L vs reference", "{:.3f}"),
        ("response_tokens", "mean generated length (tokens)", "{:.1f}"), ("stop_rate", "stop rate", "{:.2f}")]


metrics_table = console.table(ROWS)
side_by_side = console.lister("prompt", lambda s: [f"[prompt] {s['prompt']}", f"[reference] {s['reference'][:300]}"])
sample_record = console.record("prompt", "reference", "origin")
