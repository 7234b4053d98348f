"""Prompt templates and (prompt -> target) encoding for decoder-only models.

    >>> render("Translate to German: {source}\\nGerman:", {"source": "A dog.", "origin": "f:1"})
    'Translate to German: A dog.\\nGerman:'

Only the target and the end-of-sequence token after it are supervised (label != -100); the prompt
is context. With `chat=True` the prompt is the user turn and the target the assistant turn of the
tokenizer's chat template (see data/tokenize.py).
"""

from __future__ import annotations

from string import Formatter

from transformers import PreTrainedTokenizerBase

from tailor.data import tokenize
from tailor.data.tokenize import IGNORE
from tailor.errors import TailorError


def check_template(template: str, fields: list[str]) -> None:
    """Every {placeholder} must be a field the task has; a template with none is an error too."""
    try:
        names = [name for _, name, _, _ in Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise TailorError(f"data.template {template!r}: {e} (write literal braces as {{{{ and }}}}).") from None
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise TailorError(f"data.template: unknown placeholder {{{unknown[0]}}}; available: "
                          + ", ".join("{" + f + "}" for f in fields) + ".")
    if not names:
        raise TailorError(f"data.template {template!r} has no placeholder; it must contain one of "
                          + ", ".join("{" + f + "}" for f in fields) + ".")


def render(template: str, record: dict) -> str:
    return template.format(**{k: v for k, v in record.items() if k != "origin"})


def joined_target(prompt: str, target: str) -> str:
    """The target as appended to a plain prompt: after a space unless the prompt ends in whitespace."""
    return target if not prompt or prompt[-1].isspace() else " " + target


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, target: str, chat: bool = False) -> dict:
    """{"input_ids", "labels"} for prompt + target + end of sequence; only target and end supervised."""
    if chat:
        return tokenize.encode(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}])
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(joined_target(prompt, target), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": p + t, "labels": [IGNORE] * len(p) + t}


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: bool = False) -> list[int]:
    """What generation continues from: the prompt (plus the assistant header in chat mode)."""
    if chat:
        return tokenize.prompt_ids(tokenizer, [{"role": "user", "content": prompt}])
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]
