"""Packing fine-tuning samples into rows of up to `model.max_length` tokens, each sample attending only to itself.

A packed row is several whole samples one after another (never one cut in two):

    >>> rows = pack([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]},
    ...              {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]}], max_length=6)
    >>> [(r["input_ids"], r["segments"]) for r in rows]
    [([6, 7, 8, 9, 4, 5], [4, 2]), ([1, 2, 3], [3])]
    >>> rows[0]["labels"]
    [-100, -100, 8, 9, -100, 5]

Rows are filled best-fit decreasing: samples longest first, each into the row it leaves least room in
(a new row when none has room). Each sample keeps its own labels, and its first label is IGNORE: in a
row, position t predicts token t+1, so the first token of a sample would otherwise be a target predicted
from the end of the sample before it (unpacked, label 0 is never a target either). The loss summed over
targets and the target count are the unpacked ones.

Keeping samples apart: `collate` gives each row `position_ids` that restart at 0 at every sample (rotary
and learned position embeddings see each sample as if alone) and `train/loss.py` turns them into a
block-diagonal causal mask (`block_causal`). Position ids alone are not enough: transformers infers the
blocks from them only when no 2-D mask and no cache are passed, and its SDPA mask is otherwise plain causal,
so a sample would attend to the ones before it in its row.
"""

from __future__ import annotations

import bisect

import torch

from tailor.data.tokenize import IGNORE


# What data.packing 'auto' does. benchmarks/packing.py (SmolLM2-135M, chitchat, max_length 256, 2 CPU cores,
# 2 Dec 2026, a shared machine): packed rows 1.29x the real tokens/s of unpacked batches of the same
# batch_size (854 vs 663), but 1.02x unpacked batches of as many tokens: the block-diagonal mask costs about
# what the padding it saves did, and the gain at the same batch_size is the larger matrix products of
# larger steps, which a larger batch_size gives too. Packing also changes the run (fewer, larger optimizer
# steps), so 'auto' stays off: on a CPU it is a choice about the optimisation, not a speed lever.
AUTO = False


def train_rows(setting: bool | str, samples: list[dict], max_length: int) -> tuple[list[dict], dict]:
    """The training split as the loop takes it, and what packing did for the data statistics: packed rows where
    `data.packing` (True, False or 'auto') says so, else the samples as they are. The loop counts its steps
    and epochs in these rows. Rows already packed come back as they are, so calling this twice packs once."""
    if not (AUTO if setting == "auto" else setting) or not samples or "segments" in samples[0]:
        return samples, {}
    rows = pack(samples, max_length)
    tokens = sum(len(r["input_ids"]) for r in rows)
    return rows, {"packed_rows": len(rows), "packed_fill": round(tokens / (len(rows) * max_length), 3)}


def pack(samples: list[dict], max_length: int) -> list[dict]:
    """Rows {"input_ids", "labels", "segments" (the samples' lengths, in row order)}; deterministic."""
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i]["input_ids"]))  # stable: ties by index
    rows: list[list[int]] = []  # sample indices per row
    room: list[int] = []  # free tokens per row
    free: list[tuple[int, int]] = []  # sorted (free tokens, row) of the rows with room left
    for i in order:
        n = len(samples[i]["input_ids"])
        if n > max_length:
            raise ValueError(f"a sample of {n} tokens does not fit a row of {max_length}")
        at = bisect.bisect_left(free, (n, -1))  # the row with the least room that still fits the sample
        if at < len(free):
            _, row = free.pop(at)
        else:
            row = len(rows)
            rows.append([])
            room.append(max_length)
        rows[row].append(i)
        room[row] -= n
        if room[row]:
            bisect.insort(free, (room[row], row))
    return [join([samples[i] for i in members]) for members in rows]


def join(samples: list[dict]) -> dict:
    ids, labels, segments = [], [], []
    for s in samples:
        ids += s["input_ids"]
        labels += [IGNORE] + list(s["labels"][1:])
        segments.append(len(s["input_ids"]))
    return {"input_ids": ids, "labels": labels, "segments": segments}


def positions(segments: list[int], width: int) -> list[int]:
    """Position ids of a row: 0, 1, ... for each sample, and for the padding after them (its own block).

    >>> positions([3, 2], 7)
    [0, 1, 2, 0, 1, 0, 1]
    """
    out = [p for n in segments for p in range(n)]
    return out + list(range(width - len(out)))


def block_causal(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool, True = attend: causal within each run of positions that starts at 0 (one sample).

    >>> block_causal(torch.tensor([[0, 1, 0, 1, 2]]))[0, 0].int().tolist()
    [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]
    """
    block = (position_ids == 0).cumsum(-1)  # (B, T): which sample each position belongs to
    length = position_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    return ((block[:, :, None] == block[:, None, :]) & causal)[:, None]
