"""Task families. Each is a module with the same functions, so the loop and the workflow are one:

    load(cfg) -> (model, tokenizer)
    prepare(cfg, tokenizer, context) -> Splits             tokenized train/validation/test samples
    collate(samples, pad_id) -> dict of tensors           one micro-batch
    count_targets(batch) -> int                           supervised targets in a batch (normalises the step loss)
    token_stats(model, batch) -> (loss_sum, count, correct)   summed loss over supervised targets
    validate(model, tokenizer, samples, cfg, bf16) -> metrics  run during training (needs "loss")
    evaluate(model, tokenizer, samples, cfg, bf16, label) -> (metrics, outputs)   test-time evaluation
    load_trained(folder, cfg) -> model                    reload a run's saved model/ folder
    metrics_table(columns) -> str                         base vs fine-tuned metrics for the console
    side_by_side(samples, outputs, count) -> str          test samples with each model's outputs
    sample_record(sample) -> dict                         what samples.json keeps of a test sample
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tailor.errors import TailorError

TASKS = {
    "dialogue": "tailor.tasks.dialogue",
    "translation": "tailor.tasks.translation",
    "classification": "tailor.tasks.classification",
    "text": "tailor.tasks.text",
}


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise TailorError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}.")
    return importlib.import_module(TASKS[name])
