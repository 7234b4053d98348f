"""Where the task's data comes from and how it is split into samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tailor.config.base import check_range, setting
from tailor.errors import TailorError


@dataclass
class DataConfig:
    source: str | dict[str, str] = setting(
        "chitchat",
        help="Dialogue: 'chitchat' (embedded chitchat-dataset package) or a path to a JSONL file of "
        '{"messages": [{"role": ..., "content": ...}, ...]} conversations. Other tasks: a .jsonl, .csv, .tsv, '
        ".parquet or .txt file, a folder saved by datasets' save_to_disk, or a mapping {column: file} of "
        "line-aligned text files (parallel corpora, e.g. {en: train.en, de: train.de}). Relative paths are from "
        "the working directory, normally the project root.",
    )
    validation_source: str | dict[str, str] | None = setting(
        None, help="Validation split from its own file (same forms as source); null: carved out of source by val_fraction."
    )
    test_source: str | dict[str, str] | None = setting(
        None, help="Test split from its own file (same forms as source); null: carved out of source by test_fraction."
    )
    columns: dict[str, str] = setting(
        {},
        help="Which column of the source holds each field the task reads, e.g. {text: sentence, label: label} "
        "(classification), {source: en, target: de} (translation), {prompt: ..., completion: ...} or {text: ...} "
        "(text). Fields not given keep their own name.",
    )
    template: str = setting(
        "",
        help="Prompt template with {field} placeholders, e.g. 'Translate English to German:\\n{source}\\nGerman:' "
        "(translation), '{prompt}' (text). Empty: the task's default.",
    )
    format: str = setting(
        "auto",
        help="Dialogue files: 'openai' ({\"messages\": [{role, content}]}), 'sharegpt' ({\"conversations\": [{from: "
        "human|gpt|system, value}]}), 'alpaca' ({instruction, input, output}), or 'auto' (each row by its fields).",
    )
    chat_format: str = setting(
        "auto",
        help="How turns become text: 'auto' (the model's chat template; a base model without one gets "
        "'separator'), 'separator' (turns joined with the end-of-sequence token, as DialoGPT; for GPT-2-style "
        "base models), 'chatml' (<|im_start|>/<|im_end|> turns, added as special tokens where missing), or a "
        "path to a .jinja chat template. Saved with the model, so eval, chat, serve and export render the same.",
    )
    chat_template: bool = setting(
        False,
        help="Decoder-only translation/text: put the rendered prompt in a user turn and the target in the "
        "assistant turn of the model's chat template, instead of plain concatenation.",
    )
    label_names: list[str] = setting(
        [],
        help="Classification: the class names, in label-id order. Labels in the data may be these names or "
        "integer ids. Empty: the sorted distinct labels of the training data.",
    )
    pack: bool = setting(
        True,
        help="Text task on raw text ({text} rows): concatenate documents (separated by end-of-text) and cut "
        "them into full model.max_length sequences. false: one sample per document, truncated.",
    )
    packing: bool | Literal["auto"] = setting(
        "auto",
        help="Decoder-only dialogue, prompt/completion and translation training: several whole samples in each "
        "row of up to model.max_length tokens, each attending only to itself (position ids restart at every "
        "sample, block-diagonal mask), so the loss and gradients are the unpacked ones. train.batch_size then "
        "counts rows: a step holds more samples and an epoch has fewer steps, as a larger batch would. "
        "benchmarks/packing.py measured 1.29x the tokens/s of unpacked batches of the same batch_size on 2 CPU "
        "cores, about the same (1.02x) as unpacked batches of as many tokens. 'auto': off (it changes the "
        "optimisation more than the speed; data/packing.py AUTO). "
        "Encoder-decoders and classifiers keep one sample a row; raw text that "
        "data.pack cuts into full rows stays as it is.",
    )
    history_turns: int = setting(4, help="How many earlier turns (K) form the history of each sample.")
    system_prompt: str | None = setting(
        None, help="System message put before every history; null keeps the chat template's default."
    )
    val_fraction: float = setting(
        0.05, help="Share of conversations (records) of data.source in the validation split, drawn by a hash of "
        "each one's content, so repeats of a conversation or record share one split."
    )
    test_fraction: float = setting(0.05, help="Share of conversations (records) of data.source in the test split.")
    dedupe: bool = setting(
        False,
        help="Drop exact duplicates before splitting: a conversation whose turns, or a record whose fields "
        "(prompt and completion, source and target, text and label, text), repeat an earlier one's, with "
        "whitespace and Unicode normalised; the first is kept. Each source file is deduplicated on its own. "
        "false: repeats stay, each group in one split (tailor data check counts them).",
    )
    max_train_samples: int = setting(0, help="Cap on training samples (0 = all); drawn deterministically.")
    max_val_samples: int = setting(200, help="Cap on validation samples used during training (0 = all).")
    max_test_samples: int = setting(300, help="Cap on test samples used by evaluation (0 = all).")
    overlong: Literal["error", "skip"] = setting(
        "error",
        help="A sample still longer than model.max_length after dropping the oldest history turns: "
        "'error' stops with the file and line, 'skip' drops it and counts it.",
    )

    def __post_init__(self) -> None:
        from tailor.data.chat_format import check
        from tailor.data.formats import FORMATS

        if self.format not in FORMATS:
            raise TailorError(f"data.format '{self.format}' is not one of {', '.join(FORMATS)}.")
        check(self.chat_format)
        if self.history_turns < 1:
            raise TailorError(f"history_turns must be at least 1, got {self.history_turns}.")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 0.5:
                raise TailorError(f"{name} must be in [0, 0.5), got {value}.")
        check_range("history_turns", self.history_turns, 1, 10**6)
        for name in ("max_train_samples", "max_val_samples", "max_test_samples"):
            check_range(name, getattr(self, name), 0, 10**9, note=" (0 = all)")
