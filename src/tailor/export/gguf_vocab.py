"""A byte-level BPE tokenizer in llama.cpp's GGUF form: tokens, types, merges, pre-tokenizer and special ids.

llama.cpp does not run the tokenizer.json pre-tokenizer: it picks one of its own built-in splits by
the name in `tokenizer.ggml.pre`. llama.cpp's converter picks that name by hashing how the tokenizer
splits a test string, which only knows published tokenizers; here the name is read off the
tokenizer's own pre-tokenizer spec, matched against the splits llama.cpp implements, so a tokenizer
trained by the user (or one llama.cpp would split differently) is recognised or refused by what it does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tailor.errors import TailorError

# GPT-2's split, which tokenizers' ByteLevel(use_regex=True) applies.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# Qwen2's and Llama 3's splits as their tokenizer.json spell them (a Split step before ByteLevel(use_regex=False)).
QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
DIGITS = r"\p{N}"  # tokenizers' Digits(individual_digits=True)

# Each supported sequence of splits, and the name llama.cpp (build b4965 and later) gives it.
PRE_TOKENIZERS = {
    (GPT2_REGEX,): "gpt-2",
    (DIGITS, GPT2_REGEX): "smollm",  # single digits, then GPT-2's split (SmolLM, StarCoder)
    (QWEN2_REGEX,): "qwen2",
    (LLAMA3_REGEX,): "llama-bpe",
}


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str  # llama.cpp's pre-tokenizer name


def _splits(pre: dict) -> list[str]:
    """The pre-tokenizer spec as the list of regex splits it applies, in order; TailorError when it is not a
    plain sequence of splits that llama.cpp could reproduce."""
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre] if pre else []
    out = []
    for i, step in enumerate(steps):
        kind, last = step.get("type"), i == len(steps) - 1
        if kind == "ByteLevel" and last:
            if step.get("add_prefix_space"):
                raise TailorError("GGUF export: this tokenizer's ByteLevel pre-tokenizer adds a prefix space, "
                                  "which llama.cpp's byte-level BPE does not do.")
            if step.get("use_regex", True):
                out.append(GPT2_REGEX)
        elif kind == "Digits" and step.get("individual_digits"):
            out.append(DIGITS)
        elif kind == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
            pattern = step.get("pattern") or {}
            out.append(pattern.get("Regex") or pattern.get("String") or "")
        else:
            raise TailorError(f"GGUF export does not know this tokenizer's pre-tokenizer step {step}.")
    if not steps or steps[-1].get("type") != "ByteLevel":
        raise TailorError("GGUF export needs a byte-level BPE tokenizer whose pre-tokenizer ends with ByteLevel.")
    return out


def pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's name for the split the tokenizer.json `spec` applies."""
    splits = tuple(_splits(spec.get("pre_tokenizer") or {}))
    name = PRE_TOKENIZERS.get(splits)
    if name is None:
        known = ", ".join(sorted(set(PRE_TOKENIZERS.values())))
        raise TailorError(f"GGUF export: llama.cpp has no built-in pre-tokenizer that splits text like this "
                          f"tokenizer ({' then '.join(splits) or 'no split'}); supported: {known}.")
    normalizer = spec.get("normalizer") or {}
    if normalizer and normalizer.get("type") != "NFC":  # NFC changes nothing on text that is already composed
        raise TailorError(f"GGUF export: llama.cpp does not apply this tokenizer's normalizer ({normalizer.get('type')}).")
    return name


def vocab_fields(tokenizer, vocab_size: int) -> Vocab:
    """Tokens (filler rows where the embedding is larger than the vocabulary), types and merges."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TailorError("GGUF export needs a fast tokenizer (tokenizer.json).")
    spec = json.loads(backend.to_str())
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
        raise TailorError(f"GGUF export supports byte-level BPE tokenizers (GPT-2 style); this one is "
                          f"{model.get('type')} with a {decoder.get('type')} decoder.")
    pre = pre_tokenizer_name(spec)
    tokens: list[str | None] = [None] * vocab_size
    types = [int(gguf.TokenType.NORMAL)] * vocab_size
    for token, index in model["vocab"].items():
        if index >= vocab_size:
            raise TailorError(f"token {token!r} has id {index}, outside the model's vocabulary of {vocab_size}.")
        tokens[index] = token
    for added in spec.get("added_tokens") or []:
        index = added["id"]
        if index >= vocab_size:
            raise TailorError(f"added token {added['content']!r} has id {index}, outside the model's vocabulary of {vocab_size}.")
        tokens[index] = added["content"]
        types[index] = int(gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED)
    for index, token in enumerate(tokens):
        if token is None:
            tokens[index] = f"[PAD{index}]"
            types[index] = int(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return Vocab(tokens, types, merges, pre)


def chat_template(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template or None


def end_of_turn(tokenizer) -> str | None:
    """The special token the chat template puts right after an assistant reply (`<|im_end|>` for ChatML),
    found by rendering a conversation; None when the template has no chat template or no such token."""
    if not chat_template(tokenizer):
        return None
    marker = "tailor-end-of-turn-probe"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception:  # a template that refuses this conversation tells us nothing
        return None
    if marker not in text:
        return None
    after = text.split(marker, 1)[1].lstrip(" ")
    specials = sorted((t for t in tokenizer.get_added_vocab() if t), key=len, reverse=True)
    return next((t for t in specials if after.startswith(t)), None)


@dataclass
class SpecialIds:
    bos: int | None
    eos: int | None  # the end-of-turn token when the template has one, so generation stops after a reply
    eot: int | None
    unk: int | None
    pad: int | None
    add_bos: bool


def special_ids(tokenizer) -> SpecialIds:
    eot_text = end_of_turn(tokenizer)
    eot = tokenizer.convert_tokens_to_ids(eot_text) if eot_text else None
    eos = eot if eot is not None else tokenizer.eos_token_id
    probe = tokenizer("a")["input_ids"]
    add_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    return SpecialIds(tokenizer.bos_token_id, eos, eot, tokenizer.unk_token_id, tokenizer.pad_token_id, add_bos)
