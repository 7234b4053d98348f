"""Task families. Each is a module with the same functions, so the loop and the workflow are one:

    load(cfg) -> (model, tokenizer)
    prepare(cfg, tokenizer, context) -> Splits             tokenized train/validation/test samples
    collate(samples, pad_id) -> dict of tensors           one micro-batch
    token_stats(model, batch) -> (loss_sum, count, correct)   summed loss over supervised targets
    validate(model, tokenizer, samples, cfg, bf16) -> metrics  run during training (needs "loss")
    evaluate(model, tokenizer, samples, cfg, bf16, label) -> (metrics, outputs)   test-time evaluation
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tailor.errors import TailorError

TASKS = {"dialogue": "tailor.tasks.dialogue"}


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise TailorError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}.")
    return importlib.import_module(TASKS[name])
