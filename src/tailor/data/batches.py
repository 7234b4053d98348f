"""Length-grouped batches and padding collation.

Batches group samples of similar length so little compute goes to padding; the order is a
pure function of (seed, epoch), which is what lets a resumed run see the same batches. Rows packed
with several samples (data/packing.py) get position ids that restart at every sample.
"""

from __future__ import annotations

import random

import torch

from tailor.data.packing import positions
from tailor.data.tokenize import IGNORE


def length_grouped(lengths: list[int], batch_size: int, seed: int, epoch: int, group: int = 64) -> list[list[int]]:
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sequential(n: int, batch_size: int, lengths: list[int] | None = None) -> list[list[int]]:
    """Deterministic batches for evaluation; sorted by length when lengths are given."""
    order = sorted(range(n), key=lambda i: -lengths[i]) if lengths else list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def collate(samples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sample; no attention mask when nothing is padded. Packed rows (with "segments")
    add `position_ids` (B, T), restarting at 0 at each sample and at the padding; the 2-D mask then only
    says which tokens are real (train/loss.py builds the attention mask from the position ids)."""
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[row, :n] = torch.tensor(s["input_ids"])
        labels[row, :n] = torch.tensor(s["labels"])
        mask[row, :n] = 1
    batch = {"input_ids": ids, "labels": labels}
    if "segments" in samples[0]:
        batch["position_ids"] = torch.tensor([positions(s["segments"], width) for s in samples], dtype=torch.long)
    if not bool(mask.all()):
        batch["attention_mask"] = mask
    return batch


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    """Supervised targets of a causal-LM batch: position t predicts token t+1, so label 0 is never one."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
