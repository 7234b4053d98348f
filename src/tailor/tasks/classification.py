"""Classification (e.g. sentiment): a new output head on the pretrained model, one label per text.

The model is loaded with AutoModelForSequenceClassification, which keeps the pretrained body and
adds a randomly initialised head with one output per class (the last non-padding token's hidden
state feeds it, for decoder-only bodies). What trains is set in the model section: the head only
(`freeze: body`), the head plus the top N blocks (`freeze: body, train_top_layers: N`), everything
(default), or LoRA adapters plus the head (`lora.rank > 0`).

Records: {"text": ..., "label": ...}; a label is a class name from `data.label_names` or an integer
id. Metrics: loss, accuracy, macro-F1 and the confusion matrix (rows: truth, columns: prediction).
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from functools import lru_cache

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tailor import device as devices
from tailor.config import Config
from tailor.data.batches import sequential
from tailor.errors import TailorError
from tailor.eval.metrics import classification_metrics
from tailor.models.adapt import adapt
from tailor.models.heads import label_names_of, load_classifier
from tailor.models.load import load_tokenizer, resolve
from tailor.precision import autocast
from tailor.tasks import base, console
from tailor.tasks.splits import SPLITS, Splits, cap, check_context, limits, load_records, text_field
from tailor.data.tables import pick, read_rows

FIELDS = ["text", "label"]

OUTPUTS = "classified"  # the run summary says what the replies are: predicted labels, not generations


@lru_cache(maxsize=8)
def _data_labels(source: str | tuple, columns: tuple) -> tuple[str, ...]:
    rows = pick(read_rows(dict(source) if isinstance(source, tuple) else source, "train"), dict(columns), FIELDS)
    return tuple(sorted({str(r["label"]).strip() for r in rows}))


def label_names(cfg: Config) -> list[str]:
    """data.label_names, or the sorted distinct labels of the training source."""
    if cfg.data.label_names:
        return list(cfg.data.label_names)
    source = cfg.data.source
    names = _data_labels(tuple(sorted(source.items())) if isinstance(source, dict) else source,
                         tuple(sorted(cfg.data.columns.items())))
    if len(names) < 2:
        raise TailorError(f"data source {cfg.data.source}: the training data has {len(names)} distinct label(s); "
                          "classification needs at least 2.")
    if all(n.lstrip("-").isdigit() for n in names):  # integer ids: classes 0..max
        ids = sorted(int(n) for n in names)
        if ids[0] < 0:
            raise TailorError(f"data source {cfg.data.source}: label ids must be 0 or more, found {ids[0]}.")
        return [str(i) for i in range(ids[-1] + 1)]
    return list(names)


def label_id(value, names: list[str], origin: str) -> int:
    text = str(value).strip()
    if text in names:
        return names.index(text)
    if isinstance(value, bool) or not text.lstrip("-").isdigit() or not 0 <= int(text) < len(names):
        raise TailorError(f"{origin}: label {value!r} is not one of the classes ({', '.join(names)}) nor an id "
                          f"0..{len(names) - 1}; set data.label_names or fix the row.")
    return int(text)


# ---------------------------------------------------------------- model


def load(cfg: Config):
    source = resolve(cfg.model.name, cfg.model.cache_dir)
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, label_names(cfg), tokenizer.pad_token_id, cfg.model.dtype, cfg.train.seed,
                            cfg.model.quantize)
    return adapt(model, cfg.model, "classification", cfg.train.seed), tokenizer


# ---------------------------------------------------------------- data


def prepare(cfg: Config, tokenizer, context: int) -> Splits:
    """Tokenized texts; a text longer than model.max_length is cut there (counted in stats)."""
    check_context(cfg, context)
    names = label_names(cfg)
    records = load_records(cfg, FIELDS, key_fields=["text"])
    out, truncated = {}, 0
    for split in SPLITS:
        encoded = []
        for r in cap(records[split], limits(cfg)[split], f"{split}-cap"):
            text = text_field(r, "text")
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            if len(ids) > cfg.model.max_length:
                truncated += 1
                ids = ids[: cfg.model.max_length]
            if not ids:
                raise TailorError(f"{r['origin']}: the text is empty.")
            label = label_id(r["label"], names, r["origin"])
            encoded.append({"input_ids": ids, "label": label, "label_name": names[label], "text": text,
                            "origin": r["origin"]})
        out[split] = encoded
    stats = {
        "labels": names,
        "samples": {s: len(out[s]) for s in SPLITS},
        "label_counts": {s: {n: sum(1 for x in out[s] if x["label"] == i) for i, n in enumerate(names)} for s in SPLITS},
        "truncated": truncated,
        "train_tokens": sum(len(s["input_ids"]) for s in out["train"]),
        "train_supervised_tokens": len(out["train"]),  # one label per text
    }
    return Splits(out["train"], out["validation"], out["test"], stats)


def train_rows(cfg: Config, samples: list[dict]) -> list[dict]:
    """One text a row: the head reads each row's last token, so texts are never packed (data.packing)."""
    return samples


def collate(samples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask (the head reads the last non-padding token); labels (B,)."""
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        ids[row, : len(s["input_ids"])] = torch.tensor(s["input_ids"])
        mask[row, : len(s["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([s["label"] for s in samples])}


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["labels"].numel())


def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits  # (B, C)


def token_stats(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """(summed cross-entropy over the batch's texts, their number, how many were classified right)."""
    logits = logits_of(model, batch).float()
    y = batch["labels"]
    return F.cross_entropy(logits, y, reduction="sum"), int(y.numel()), int((logits.argmax(-1) == y).sum())


# ---------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict(model, samples: list[dict], pad_id: int, batch_size: int, bf16: bool, desc: str) -> tuple[float, list[int], list[list[float]]]:
    """(mean loss, predicted class per sample, class probabilities per sample)."""
    was_training = model.training
    model.eval()
    nll, preds, probs = 0.0, [0] * len(samples), [[]] * len(samples)
    for idx in tqdm(sequential(len(samples), batch_size, [len(s["input_ids"]) for s in samples]),
                    desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        batch = devices.put(collate([samples[i] for i in idx], pad_id), devices.of(model))
        with autocast(bf16):
            logits = logits_of(model, batch).float()
        nll += float(F.cross_entropy(logits, batch["labels"], reduction="sum"))
        p = logits.softmax(-1)
        for row, i in enumerate(idx):
            preds[i], probs[i] = int(p[row].argmax()), [round(float(x), 4) for x in p[row]]
    model.train(was_training)
    return nll / max(len(samples), 1), preds, probs


def metrics_of(loss: float, preds: list[int], samples: list[dict], names: list[str]) -> dict:
    m = classification_metrics([names[p] for p in preds], [names[s["label"]] for s in samples], names)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), **m}


def validate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool) -> dict:
    loss, preds, _ = predict(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, "validate")
    m = metrics_of(loss, preds, samples, names_of(model))
    return {k: v for k, v in m.items() if k != "confusion_matrix"}


def names_of(model) -> list[str]:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return label_names_of(inner)


def with_test_data(cfg: Config, source: str, model) -> Config:
    """`source` whole as the test split, its labels read as the model's own classes (its head's), not as
    whatever set of labels the file happens to hold."""
    cfg = base.with_test_data(cfg, source)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, label_names=names_of(model)))


def evaluate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, label: str = "") -> tuple[dict, list[dict]]:
    names = names_of(model)
    loss, preds, probs = predict(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, f"classify {label}".strip())
    metrics = metrics_of(loss, preds, samples, names)
    cm = metrics["confusion_matrix"]
    print(f"[{label}] confusion matrix (rows: truth, columns: prediction)\n" + confusion_text(cm["labels"], cm["matrix"]), flush=True)
    return metrics, [{"text": names[p], "probabilities": pr} for p, pr in zip(preds, probs)]


def confusion_text(labels: list[str], matrix: list[list[int]]) -> str:
    width = max(8, *(len(n) for n in labels))
    lines = [" " * width + "  " + "  ".join(f"{n:>{width}}" for n in labels)]
    for name, row in zip(labels, matrix):
        lines.append(f"{name:>{width}}  " + "  ".join(f"{c:>{width}}" for c in row))
    return "\n".join(lines)


# ---------------------------------------------------------------- console


ROWS = [("accuracy", "accuracy", "{:.3f}"), ("macro_f1", "macro-F1", "{:.3f}"), ("loss", "loss", "{:.4f}")]


def metrics_table(columns: dict[str, dict]) -> str:
    return console.metrics_table(columns, ROWS)


def side_by_side(samples: list[dict], outputs: dict[str, list[dict]], count: int, width: int = 100) -> str:
    out = []
    for i, s in enumerate(samples[:count]):
        out.append(f"--- test text {i + 1} " + "-" * 40)
        out.append(textwrap.fill(s["text"], width, subsequent_indent="    "))
        out.append(f"[truth] {s['label_name']}   " + "   ".join(f"[{n}] {rs[i]['text']}" for n, rs in outputs.items()))
    return "\n".join(out)


def sample_record(sample: dict) -> dict:
    return {"text": sample["text"], "label": sample["label_name"], "origin": sample["origin"]}
