"""Length-grouped training batches."""

import random

from tailor.data.batches import length_grouped


def test_length_grouped_puts_the_longest_first_and_covers_every_sample_once():
    rng = random.Random(0)
    lengths = [rng.randint(5, 250) for _ in range(203)]
    for epoch in range(3):
        batches = length_grouped(lengths, 8, seed=1, epoch=epoch, group=4)
        assert max(lengths) in [lengths[i] for i in batches[0]]
        assert sorted(i for b in batches for i in b) == list(range(203))
        assert all(len(b) <= 8 for b in batches)
        spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches[1:]]
        assert sum(spread) / len(spread) < 100  # grouped: random batches of 8 would spread ~190
    assert length_grouped(lengths, 8, 1, 0, 4) == length_grouped(lengths, 8, 1, 0, 4)
    assert length_grouped(lengths, 8, 1, 0, 4) != length_grouped(lengths, 8, 1, 1, 4)
