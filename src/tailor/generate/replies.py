"""Batched reply generation with the shared decoding settings.

Greedy decoding, sampling, repetition penalties, no-repeat n-grams and stop strings run on the one
decoder (`generate.decoder`) on CPU; beams, banned words and minimum lengths, and any decoding on other
devices, run on transformers' `generate`."""

from __future__ import annotations

import torch
from tqdm import tqdm
from transformers import GenerationConfig

from tailor import device as devices
from tailor.config.decode import DecodeConfig
from tailor import kernels
from tailor.generate import decoder, lean
from tailor.kernels import patched
from tailor.precision import autocast, inference_model, use_half

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def decode_bf16(model, precision: str, decode: DecodeConfig) -> bool:
    """Whether `tailor generate`, chat and the server decode on bf16 weights: where training would run in half
    precision (`use_half`), and with precision auto on a CPU without native bf16 for Llama-family models, whose
    bf16 weights decode there in fp32 through widen.cpp (half the bytes of fp32 weights per step, as llama.cpp
    decodes f16 weights). Elsewhere there (other models, beams, banned words, minimum lengths, decode.kernels off) bf16 would be emulated: fp32."""
    if use_half(precision):
        return True
    on_lean = lean.supports(model) and decode.num_beams == 1 and not decode.bad_words and not decode.min_new_tokens
    return precision == "auto" and devices.is_cpu(devices.of(model)) and on_lean and decode.kernels and kernels.avx512_available()


def stop_ids(tokenizer) -> list[int]:
    """The end-of-sequence token and any end-of-turn token the chat template uses."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in END_OF_TURN if t in vocab}
    return sorted(ids)


def banned_word_ids(tokenizer, words: list[str]) -> list[list[int]]:
    """Token sequences of each banned word, alone and after a space (BPE spells them differently)."""
    found: list[list[int]] = []
    for word in words:
        for variant in (word, " " + word.lstrip()):
            ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if ids and ids not in found:
                found.append(ids)
    return found


def generation_config(decode: DecodeConfig, tokenizer, seed_free: bool = True) -> GenerationConfig:
    """The Hugging Face GenerationConfig for `decode`; only the settings of its strategy are set.

    Stop strings need the tokenizer at `model.generate(..., tokenizer=tokenizer)` time.
    """
    kw = dict(
        max_new_tokens=decode.max_new_tokens,
        do_sample=decode.do_sample,
        num_beams=decode.num_beams,
        repetition_penalty=decode.repetition_penalty,
        eos_token_id=stop_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    if decode.min_new_tokens:
        kw["min_new_tokens"] = decode.min_new_tokens
    if decode.do_sample:
        kw.update(temperature=decode.temperature, top_k=decode.top_k or None, top_p=decode.top_p)
    if decode.num_beams > 1:
        kw.update(length_penalty=decode.length_penalty, early_stopping=decode.early_stopping)
    if decode.no_repeat_ngram_size:
        kw["no_repeat_ngram_size"] = decode.no_repeat_ngram_size
    if decode.bad_words:
        kw["bad_words_ids"] = banned_word_ids(tokenizer, decode.bad_words)
    if decode.stop_strings:
        kw["stop_strings"] = list(decode.stop_strings)
    return GenerationConfig(**kw)


def finish_reply(tokenizer, new: list[int], stops: set[int], stop_strings: list[str]) -> dict:
    """One generated continuation -> {"text", "tokens", "stopped"}: cut at the first end-of-turn
    token, drop padding, and cut the text before the first stop string."""
    cut = next((k for k, tok in enumerate(new) if tok in stops), None)
    reply = new if cut is None else new[:cut]
    reply = [tok for tok in reply if tok != tokenizer.pad_token_id]  # a stop string pads the rest of its row
    text = tokenizer.decode(reply, skip_special_tokens=True)
    hits = [text.index(s) for s in stop_strings if s in text]
    if hits:
        text = text[: min(hits)]
    return {"text": text.strip(), "tokens": len(reply), "stopped": cut is not None or bool(hits)}


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[list[int]], decode: DecodeConfig, bf16: bool = False, seed: int = 0, desc: str = "generate") -> list[dict]:
    """Reply to each tokenized prompt: {"text", "tokens" (count), "stopped" (ended its turn)}."""
    model.eval()
    gen = generation_config(decode, tokenizer)
    stops = set(stop_ids(tokenizer))
    runner = inference_model(model, bf16)  # bf16 weights cast once, not by autocast at every step
    where = devices.of(runner)
    own = devices.is_cpu(where) and decoder.supports(runner, gen)  # elsewhere transformers' generate
    torch.manual_seed(seed)
    results: list[dict] = [None] * len(prompts)  # type: ignore[list-item]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths pad less
    chunks = [order[i : i + decode.batch_size] for i in range(0, len(order), decode.batch_size)]
    for chunk in tqdm(chunks, desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):  # left padding: every prompt ends where generation starts
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        ids, mask = devices.put(ids, where), devices.put(mask, where)
        if own:
            with patched(runner, training=False, enabled=decode.kernels):  # decode.kernels: the C++ kernels or torch's ops
                new = decoder.decode(runner, ids, mask, gen, draft=decode.lookahead, tokenizer=tokenizer)  # (B, n)
        else:
            with autocast(bf16 and runner is model):
                new = runner.generate(input_ids=ids, attention_mask=mask, generation_config=gen, tokenizer=tokenizer)[:, width:]
        for row, i in enumerate(chunk):
            results[i] = finish_reply(tokenizer, new[row].tolist(), stops, decode.stop_strings)
    return results
