"""The Task interface: what every task module (dialogue, translation, classification, text) provides.

The workflow resolves the task once (`tasks.get_task(cfg.task)`) and hands it to the training loop,
evaluation and the run summary; tests/tasks/test_task_interface.py checks every registered module has
every member, so a missing one fails there and not halfway through a run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

from tailor.config import Config
from tailor.data import packing
from tailor.tasks.splits import Splits
from tailor.train import distributed


@runtime_checkable
class Task(Protocol):
    OUTPUTS: str  # what the task's outputs are called in summaries: "generated" replies, "classified" texts

    def load(self, cfg: Config) -> tuple[Any, Any]:
        """(model, tokenizer) of the config's pretrained model, ready to train (head, LoRA, freezing)."""

    def prepare(self, cfg: Config, tokenizer, context: int) -> Splits:
        """Tokenized train/validation/test samples, read and checked from the config's data."""

    def train_rows(self, cfg: Config, samples: list[dict]) -> list[dict]:
        """The training split as the loop takes it: the samples, or rows packed with several of them
        (data.packing); the loop counts its steps and epochs in these."""

    def collate(self, samples: list[dict], pad_id: int) -> dict:
        """One micro-batch of tensors."""

    def count_targets(self, batch: dict) -> int:
        """Supervised targets in a batch (normalises the step loss)."""

    def token_stats(self, model, batch: dict) -> tuple[Any, int, int]:
        """(summed loss over supervised targets, their number, how many the argmax got right)."""

    def validate(self, model, tokenizer, samples: list[dict], cfg: Config, bf16: bool) -> dict:
        """Metrics during training (needs "loss")."""

    def evaluate(self, model, tokenizer, samples: list[dict], cfg: Config, bf16: bool,
                 label: str = "") -> tuple[dict, list[dict]]:
        """Test-time (metrics, outputs)."""

    def with_test_data(self, cfg: Config, source: str, model) -> Config:
        """`cfg` reading `source` whole as its test split (`tailor eval --data`, `tailor compare --data`)."""

    def sample_record(self, sample: dict) -> dict:
        """What samples.json keeps of a test sample."""

    def metrics_table(self, columns: dict[str, dict]) -> str:
        """Metrics of several models side by side, for the console."""

    def side_by_side(self, samples: list[dict], outputs: dict[str, list[dict]], count: int) -> str:
        """The first `count` test samples with each model's outputs, for the console."""


def train_rows(cfg: Config, samples: list[dict]) -> list[dict]:
    """Decoder-only samples packed into rows of up to model.max_length tokens where data.packing says so
    (data/packing.py); an encoder-decoder's samples as they are."""
    if not samples or samples[0].get("seq2seq"):
        return samples
    rows, stats = packing.train_rows(cfg.data.packing, samples, cfg.model.max_length)
    if stats and distributed.is_main():
        print(f"data.packing: {len(samples)} training samples in {stats['packed_rows']} rows of up to "
              f"{cfg.model.max_length} tokens ({stats['packed_fill']:.0%} full), each sample attending to itself",
              flush=True)
    return rows


def with_test_data(cfg: Config, source: str, model=None) -> Config:
    """Every split reads `source` and only the test split is kept whole: a split with its own source takes all
    of it, so nothing is dealt by hash, and one sample each in train and validation keeps their encoding cheap.
    The task's own reading and checks apply, so a bad row is named as training would name it."""
    data = dataclasses.replace(cfg.data, source=source, validation_source=source, test_source=source,
                               max_train_samples=1, max_val_samples=1, max_test_samples=0)
    return dataclasses.replace(cfg, data=data)
