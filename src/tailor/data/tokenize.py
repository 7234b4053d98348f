"""Render chat samples with the model's chat template and mark which tokens are trained on.

Only the response is supervised: its content and the end-of-turn token, so the model learns
to stop. Everything before it (system, history, the assistant header) has label -100.
"""

from __future__ import annotations

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from tailor.errors import TailorError

IGNORE = -100


def render(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> tuple[str, str]:
    """(prompt text up to the assistant header, full text including the response)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TailorError("the tokenizer has no chat template; set data.chat_format (separator, chatml or a .jinja file).")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise TailorError("the chat template renders the history differently with and without the reply; "
                          "it cannot be used to mask the prompt.")
    return prompt, full


def encode(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> dict:
    """input_ids and labels for one sample; trailing whitespace after the end-of-turn is not trained."""
    prompt, full = render(tokenizer, messages)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[: len(prompt_ids)] != prompt_ids:
        # The tokenizer merged across the prompt/response boundary: tokenize the parts separately.
        ids = prompt_ids + tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    end = len(ids)
    while end > len(prompt_ids) + 1 and not tokenizer.decode(ids[end - 1 : end]).strip():
        end -= 1
    ids = ids[:end]
    labels = [IGNORE] * len(prompt_ids) + ids[len(prompt_ids):]
    return {"input_ids": ids, "labels": labels}


def encode_fitting(tokenizer: PreTrainedTokenizerBase, sample: dict, max_length: int, encoder=None) -> dict | None:
    """Encode (with `encoder(tokenizer, messages)`, default `encode`), dropping the oldest history turns until
    the sample fits; None if even one turn is too long."""
    encoder = encoder or encode
    messages = sample["messages"]
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    while True:
        try:
            enc = encoder(tokenizer, system + turns)
        except TemplateError as e:  # a strict template (e.g. one that raises on a system turn) refuses it
            raise TailorError(f"{sample['origin']}: the chat template refuses this conversation ({e}). Fix the "
                              "conversation, or set data.chat_format to a template that accepts it.") from None
        if max(len(enc["input_ids"]), len(enc["labels"])) <= max_length:
            return {**enc, "id": sample["id"], "origin": sample["origin"], "messages": system + turns}
        if len(turns) <= 2:
            return None
        turns = turns[2:]  # drop a user/assistant pair so the history still opens with the user


def history_text(tokenizer: PreTrainedTokenizerBase, history: list[dict]) -> str:
    """The history as the chat template renders it, up to where the reply begins."""
    if not getattr(tokenizer, "chat_template", None):
        raise TailorError("the tokenizer has no chat template; set data.chat_format (separator, chatml or a .jinja file).")
    return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, history: list[dict]) -> list[int]:
    return tokenizer(history_text(tokenizer, history), add_special_tokens=False)["input_ids"]
