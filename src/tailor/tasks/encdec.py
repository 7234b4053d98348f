"""Encoder-decoder models (T5, BART, Marian) for the tasks that use them (translation, dialogue).

The encoder reads the input (a templated source sentence, or a conversation's rendered history), the
decoder learns the target (the translation, or the reply) and the end-of-sequence token after it.
Batches, the loss on target tokens, teacher-forced scores and batched generation live here, once.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tailor import device as devices
from tailor.config import Config
from tailor.config.decode import DecodeConfig
from tailor.data import batches
from tailor.data.tokenize import IGNORE
from tailor.generate.replies import finish_reply, generation_config
from tailor.models.load import load_model, load_tokenizer, resolve
from tailor.models.seq2seq import is_encoder_decoder, load_seq2seq
from tailor.precision import autocast
from tailor.train import loss as causal_loss


@lru_cache(maxsize=8)
def _kind(name: str, cache_dir: str) -> str:
    return "seq2seq" if is_encoder_decoder(resolve(name, cache_dir)) else "causal"


def kind(cfg: Config) -> str:
    """'seq2seq' for encoder-decoder models, else 'causal'."""
    return _kind(cfg.model.name, cfg.model.cache_dir)


def load(cfg: Config):
    """(model, tokenizer, kind) of the config's pretrained model: an encoder-decoder or a causal LM."""
    source = resolve(cfg.model.name, cfg.model.cache_dir)
    loader = load_seq2seq if kind(cfg) == "seq2seq" else load_model
    return loader(source, cfg.model.dtype, cfg.model.quantize), load_tokenizer(source), kind(cfg)


def _ended(ids: list[int], eos: int | None) -> list[int]:
    return ids if eos is None or ids[-1:] == [eos] else ids + [eos]


def encoder_ids(tokenizer, source: str) -> list[int]:
    """The encoder's input, ending in the end-of-sequence token (T5/BART/Marian tokenizers add it already)."""
    return _ended(tokenizer(source)["input_ids"], tokenizer.eos_token_id)


def encode(tokenizer, source: str, target: str) -> dict:
    """Encoder ids and decoder labels, each ending in the end-of-sequence token (the decoder must learn to stop)."""
    labels = _ended(tokenizer(text_target=target)["input_ids"], tokenizer.eos_token_id)
    return {"input_ids": encoder_ids(tokenizer, source), "labels": labels, "seq2seq": True}


def collate(samples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    return seq2seq_collate(samples, pad_id) if samples[0].get("seq2seq") else batches.collate(samples, pad_id)


def seq2seq_collate(samples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded encoder inputs with their mask; labels padded with -100 (the decoder input is
    the labels shifted right, made by the model)."""
    width = max(len(s["input_ids"]) for s in samples)
    target_width = max(len(s["labels"]) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), target_width), IGNORE, dtype=torch.long)
    for row, s in enumerate(samples):
        ids[row, : len(s["input_ids"])] = torch.tensor(s["input_ids"])
        mask[row, : len(s["input_ids"])] = 1
        labels[row, : len(s["labels"])] = torch.tensor(s["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "decoder_attention_mask": (labels != IGNORE).long()}


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    if "decoder_attention_mask" in batch:
        return int((batch["labels"] != IGNORE).sum())
    return batches.count_targets(batch)


def token_stats(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """(summed NLL over target tokens, their number, how many the argmax got right)."""
    if "decoder_attention_mask" not in batch:
        return causal_loss.token_stats(model, batch)
    labels = batch["labels"]  # (B, T); the model shifts them right into the decoder input
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                   decoder_attention_mask=batch["decoder_attention_mask"], use_cache=False).logits  # (B, T, V)
    keep = labels != IGNORE  # (B, T)
    lg, y = logits[keep].float(), labels[keep]  # (N, V), (N,)
    return F.cross_entropy(lg, y, reduction="sum"), int(y.numel()), int((lg.argmax(-1) == y).sum())


@torch.inference_mode()
def teacher_forced(model, samples: list[dict], pad_id: int, batch_size: int, bf16: bool, desc: str) -> dict:
    was_training = model.training
    model.eval()
    nll, tokens, correct = 0.0, 0, 0
    for idx in tqdm(batches.sequential(len(samples), batch_size, [len(s["input_ids"]) for s in samples]),
                    desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        with autocast(bf16):
            total, n, c = token_stats(model, devices.put(collate([samples[i] for i in idx], pad_id), devices.of(model)))
        nll, tokens, correct = nll + float(total), tokens + n, correct + c
    model.train(was_training)
    loss = nll / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "token_accuracy": correct / max(tokens, 1), "tokens": tokens}


def decoder_config(model, tokenizer, decode: DecodeConfig):
    """The decode section as a GenerationConfig for an encoder-decoder: it ends at end-of-sequence and
    starts from the model's decoder start token."""
    gen = generation_config(decode, tokenizer)
    gen.eos_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    start = getattr(model.generation_config, "decoder_start_token_id", None) or model.config.decoder_start_token_id
    gen.decoder_start_token_id = start
    return gen


@torch.inference_mode()
def generate(model, tokenizer, inputs: list[list[int]], decode: DecodeConfig, bf16: bool = False, seed: int = 0,
             desc: str = "generate") -> list[dict]:
    """Decode a reply to each encoder input: {"text", "tokens" (count), "stopped" (ended with end-of-sequence)}."""
    model.eval()
    gen = decoder_config(model, tokenizer, decode)
    stops = {gen.eos_token_id}
    torch.manual_seed(seed)
    out: list[dict] = [{}] * len(inputs)
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    size = decode.batch_size
    for chunk in tqdm([order[i : i + size] for i in range(0, len(order), size)], desc=desc, unit="batch", leave=False,
                      dynamic_ncols=True):
        batch = devices.put(seq2seq_collate([{"input_ids": inputs[i], "labels": [0]} for i in chunk],
                                            tokenizer.pad_token_id), devices.of(model))
        with autocast(bf16):
            ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], generation_config=gen)
        for row, i in enumerate(chunk):
            new = ids[row].tolist()[1:]  # the first id is the decoder start token
            out[i] = finish_reply(tokenizer, new, stops, decode.stop_strings)
    return out
