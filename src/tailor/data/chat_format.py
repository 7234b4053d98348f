"""How a conversation becomes text for the model: data.chat_format.

- `auto`: the model's own chat template when its tokenizer has one; a base model without one gets
  `separator`.
- `separator`: the turns joined with the end-of-sequence token, as DialoGPT does: the mission's way
  for GPT-2-style base models. The reply and the EOS that ends it are trained; generation stops there.
- `chatml`: `<|im_start|>role\\n...<|im_end|>` turns, with the two markers added to the tokenizer as
  special tokens where it lacks them (the model's embeddings then grow to match: `added_tokens`).
- a `.jinja` file: any Jinja chat template, used as the tokenizer's.

Whichever it is, the template is set on the tokenizer, which is saved with the model: eval, chat,
serve and export then render exactly what training rendered.
"""

from __future__ import annotations

from pathlib import Path

from tailor.errors import TailorError

CHOICES = ("auto", "chatml", "separator")

SEPARATOR = "{% for message in messages %}{{ message['content'] + eos_token }}{% endfor %}"

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]


def check(setting: str) -> None:
    """A config-time check: a known name or an existing .jinja file."""
    if setting in CHOICES:
        return
    if not setting.endswith(".jinja"):
        raise TailorError(f"data.chat_format '{setting}' is not one of {', '.join(CHOICES)} or a path to a .jinja "
                          "chat template file.")
    if not Path(setting).expanduser().is_file():
        raise TailorError(f"data.chat_format: the chat template file {setting} does not exist.")


def apply(tokenizer, setting: str) -> list[int]:
    """Set the tokenizer's chat template per data.chat_format; returns the ids of tokens it added (the
    model's embeddings must then be resized, see models.chat_format)."""
    check(setting)
    current = getattr(tokenizer, "chat_template", None)
    if setting == "auto":
        setting = "keep" if current else "separator"
    if setting == "keep":
        return []
    if setting == "separator":
        if tokenizer.eos_token is None:
            raise TailorError("data.chat_format 'separator' joins turns with the end-of-sequence token, and this "
                              "tokenizer has none; use data.chat_format chatml.")
        tokenizer.chat_template = SEPARATOR
        return []
    if setting == "chatml":
        missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        tokenizer.chat_template = CHATML
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return [tokenizer.convert_tokens_to_ids(t) for t in missing]
    path = Path(setting).expanduser()
    try:
        tokenizer.chat_template = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise TailorError(f"data.chat_format: cannot read the chat template {path}: {e}") from None
    return []
