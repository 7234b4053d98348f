"""Translation: (source, target) sentence pairs, with a decoder-only or an encoder-decoder model.

- decoder-only (the default SmolLM2): the source goes into `data.template` (e.g.
  "Translate English to German:\\n{source}\\nGerman:"); the model is trained on the target and the
  end-of-sequence token only. With `data.chat_template: true` the prompt is a user turn instead.
- encoder-decoder (T5, Marian, BART, ...; found from the model's config): the encoder reads the
  templated source (default "{source}"; T5 wants "translate English to German: {source}"), the decoder
  learns the target; loaded through AutoModelForSeq2SeqLM.

Test metrics: BLEU and chrF (sacrebleu, signature printed and stored) on translations decoded with
the `decode` section (num_beams > 1 for beam search), plus teacher-forced loss / perplexity.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from tqdm import tqdm

from tailor import device as devices
from tailor.config import Config
from tailor.data import chat_format
from tailor.data.prompts import check_template, encode_pair, prompt_ids, render
from tailor.errors import TailorError
from tailor.generate.replies import generation_config, stop_ids
from tailor.models.adapt import adapt
from tailor.precision import autocast
from tailor.tasks import console, encdec
from tailor.tasks.base import train_rows, with_test_data  # noqa: F401  (the task's)
from tailor.tasks.encdec import collate, count_targets, kind, teacher_forced, token_stats  # noqa: F401  (the task's)
from tailor.tasks.splits import SPLITS, Splits, cap, check_context, limits, load_records, text_field

FIELDS = ["source", "target"]
OUTPUTS = "generated"  # what the run summary calls the test outputs
DEFAULT_TEMPLATE = {"causal": "Translate:\n{source}\nTranslation:", "seq2seq": "{source}"}


def template(cfg: Config) -> str:
    t = cfg.data.template or DEFAULT_TEMPLATE[kind(cfg)]
    check_template(t, ["source"])
    return t


# ---------------------------------------------------------------- model


def load(cfg: Config):
    model, tokenizer, model_kind = encdec.load(cfg)
    added = chat_format.apply(tokenizer, cfg.data.chat_format) if cfg.data.chat_template and model_kind == "causal" else []
    return adapt(model, cfg.model, model_kind, cfg.train.seed, added, len(tokenizer)), tokenizer


# ---------------------------------------------------------------- data


def encode(cfg: Config, tokenizer, record: dict) -> dict:
    source, target = text_field(record, "source"), text_field(record, "target")
    prompt = render(template(cfg), {"source": source})
    if kind(cfg) == "seq2seq":
        enc = encdec.encode(tokenizer, prompt, target)
    else:
        enc = encode_pair(tokenizer, prompt, target, cfg.data.chat_template)
    return {**enc, "source": source, "target": target, "prompt": prompt, "origin": record["origin"]}


def prepare(cfg: Config, tokenizer, context: int) -> Splits:
    check_context(cfg, context)
    records = load_records(cfg, FIELDS, key_fields=["source"])
    max_length, out, skipped = cfg.model.max_length, {}, 0
    for split in SPLITS:
        encoded = []
        for record in cap(records[split], limits(cfg)[split], f"{split}-cap"):
            enc = encode(cfg, tokenizer, record)
            if max(len(enc["input_ids"]), len(enc["labels"])) > max_length:
                if cfg.data.overlong == "error":
                    raise TailorError(f"{record['origin']}: the pair is longer than model.max_length={max_length} "
                                      "tokens. Raise model.max_length or set data.overlong=skip.")
                skipped += 1
                continue
            encoded.append(enc)
        out[split] = encoded
    supervised = sum(count_targets(collate([s], tokenizer.pad_token_id)) for s in out["train"])
    stats = {
        "model_kind": kind(cfg),
        "template": template(cfg),
        "samples": {s: len(out[s]) for s in SPLITS},
        "skipped_overlong": skipped,
        "train_tokens": sum(len(s["input_ids"]) + (len(s["labels"]) if kind(cfg) == "seq2seq" else 0) for s in out["train"]),
        "train_supervised_tokens": supervised,
    }
    return Splits(out["train"], out["validation"], out["test"], stats)


# ---------------------------------------------------------------- evaluation


def validate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool) -> dict:
    return teacher_forced(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, "validate")


def first_line(text: str) -> str:
    """A decoder-only model may run on past the sentence; a translation is its first line."""
    return text.strip().split("\n", 1)[0].strip()


@lru_cache(maxsize=4)
def _newline_ids(tokenizer) -> tuple[int, ...]:
    return tuple(i for i in tokenizer.get_vocab().values() if "\n" in tokenizer.decode([i]))


@torch.inference_mode()
def generate_causal(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, desc: str) -> list[str]:
    """Left-padded batches; a translation ends at the end-of-sequence token or at a line break (a base
    model rarely emits the former), so every token holding a newline also ends a beam."""
    model.eval()
    gen = generation_config(cfg.decode, tokenizer)
    gen.eos_token_id = sorted(set(stop_ids(tokenizer)) | set(_newline_ids(tokenizer)))
    torch.manual_seed(cfg.train.seed)
    prompts = [prompt_ids(tokenizer, s["prompt"], cfg.data.chat_template) for s in samples]
    out: list[str] = [""] * len(samples)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    size = cfg.decode.batch_size
    for chunk in tqdm([order[i : i + size] for i in range(0, len(order), size)], desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T) left-padded
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        with autocast(bf16):
            new = model.generate(input_ids=devices.put(ids, devices.of(model)), attention_mask=devices.put(mask, devices.of(model)), generation_config=gen)[:, width:]  # (B, new)
        for row, i in enumerate(chunk):
            out[i] = first_line(tokenizer.decode(new[row], skip_special_tokens=True))
    return out


def translate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, desc: str = "translate") -> list[str]:
    if kind(cfg) == "seq2seq":
        replies = encdec.generate(model, tokenizer, [s["input_ids"] for s in samples], cfg.decode, bf16, cfg.train.seed, desc)
        return [r["text"] for r in replies]
    return generate_causal(model, tokenizer, samples, cfg, bf16, desc)


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """BLEU and chrF with sacrebleu's defaults, and the signatures that say exactly how."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def evaluate(model, tokenizer, samples: list[dict], cfg: Config, bf16: bool, label: str = "") -> tuple[dict, list[dict]]:
    """Teacher-forced loss plus BLEU/chrF of decoded translations of every test sample."""
    metrics = teacher_forced(model, samples, tokenizer.pad_token_id, cfg.eval.batch_size, bf16, f"score {label}".strip())
    hyps = translate(model, tokenizer, samples, cfg, bf16, f"translate {label}".strip())
    metrics.update(corpus_scores(hyps, [s["target"] for s in samples]))
    metrics["decoding"] = f"{cfg.decode.strategy}, num_beams={cfg.decode.num_beams}"
    print(f"[{label}] BLEU {metrics['bleu']:.2f} ({metrics['bleu_signature']})", flush=True)
    print(f"[{label}] chrF {metrics['chrf']:.2f} ({metrics['chrf_signature']})", flush=True)
    return metrics, [{"text": h} for h in hyps]


# ---------------------------------------------------------------- console


ROWS = [("bleu", "BLEU", "{:.2f}"), ("chrf", "chrF", "{:.2f}"), ("perplexity", "perplexity (target tokens)", "{:.2f}"),
        ("token_accuracy", "token accuracy", "{:.3f}"), ("loss", "loss", "{:.4f}")]


metrics_table = console.table(ROWS)
side_by_side = console.lister("sentence", lambda s: [f"[source] {s['source']}", f"[reference] {s['target']}"])
sample_record = console.record("source", "target", "origin")
