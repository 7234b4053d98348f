"""Packing samples into rows: every sample once, whole, in rows that fit; position ids restart at each sample."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tailor.data.batches import collate, count_targets
from tailor.data.packing import block_causal, pack, train_rows


def sample(n: int, start: int, prompt: int = 1) -> dict:
    ids = list(range(start, start + n))
    return {"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=60), st.integers(40, 100))
def test_rows_hold_every_sample_once_whole_and_fit(lengths, max_length):
    samples = [sample(n, 1000 * i) for i, n in enumerate(lengths)]
    rows = pack(samples, max_length)
    assert all(len(r["input_ids"]) <= max_length for r in rows)
    pieces = []
    for r in rows:
        assert sum(r["segments"]) == len(r["input_ids"]) == len(r["labels"])
        at = 0
        for n in r["segments"]:
            pieces.append(tuple(r["input_ids"][at : at + n]))
            assert r["labels"][at] == -100  # a sample's first token is never a target
            at += n
    assert sorted(pieces) == sorted(tuple(s["input_ids"]) for s in samples)
    # Greedy packing never leaves two rows that would fit in one.
    assert all(len(a["input_ids"]) + len(b["input_ids"]) > max_length for i, a in enumerate(rows) for b in rows[i + 1 :])


def test_packed_batches_count_the_same_targets():
    samples = [sample(n, 100 * i, prompt=min(3, n - 1)) for i, n in enumerate([9, 4, 7, 12, 3, 5])]
    rows = pack(samples, 16)
    assert len(rows) < len(samples)
    assert count_targets(collate(rows, 0)) == count_targets(collate(samples, 0))


def test_collate_restarts_positions_at_each_sample_and_at_the_padding():
    rows = pack([sample(3, 10), sample(2, 20), sample(4, 30)], 6)  # -> [4, 2] and [3]
    batch = collate(rows, 0)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    mask = block_causal(batch["position_ids"])[:, 0]
    assert not mask[0, 4, :4].any() and mask[0, 5, 4:].all()  # the second sample sees itself only
    assert mask[1].tril().equal(mask[1])  # causal


def test_unpacked_samples_get_no_position_ids():
    assert "position_ids" not in collate([sample(3, 10), sample(5, 20)], 0)


def test_a_sample_longer_than_a_row_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        pack([sample(9, 0)], 8)


def test_the_setting_decides_and_reports():
    samples = [sample(n, 10 * i) for i, n in enumerate([5, 5, 5, 5])]
    assert train_rows(False, samples, 10) == (samples, {})
    rows, stats = train_rows(True, samples, 10)
    assert len(rows) == 2 and stats == {"packed_rows": 2, "packed_fill": 1.0}
    assert train_rows("auto", samples, 10)[0] in (samples, rows)


def test_block_causal_is_plain_causal_for_one_sample_a_row():
    mask = block_causal(torch.arange(5)[None])
    assert mask[0, 0].equal(torch.ones(5, 5, dtype=torch.bool).tril())


@pytest.mark.parametrize("value", ["auto", True, False])
def test_the_setting_takes_auto_true_or_false(value):
    from tailor.config import config_from_dict

    assert config_from_dict({"data": {"packing": value}}).data.packing == value


def test_the_setting_refuses_anything_else():
    from tailor.config import config_from_dict
    from tailor.errors import TailorError

    with pytest.raises(TailorError, match="packing"):
        config_from_dict({"data": {"packing": "yes"}})


def test_rows_are_packed_once():
    rows, _ = train_rows(True, [sample(n, 10 * i) for i, n in enumerate([5, 3, 4, 2])], 8)
    assert train_rows(True, rows, 8) == (rows, {})
