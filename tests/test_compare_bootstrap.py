"""Paired bootstrap of metric deltas between two systems on the same prompts."""

import numpy as np
import pytest

from tailor.eval import metrics as M
from tailor.eval.compare import aggregate, bootstrap_deltas, format_interval, leave_one_out_distinct, measure

REFS = [f"the answer number {i} is a nice and friendly reply" for i in range(40)]


def replies(texts, stopped=True):
    return [{"text": t, "tokens": len(t.split()), "stopped": stopped} for t in texts]


def test_aggregate_over_all_samples_equals_the_metric_functions():
    texts = [r if i % 3 else "something else entirely" for i, r in enumerate(REFS)]
    m = measure(replies(texts), REFS, nll=[2.0] * 40, targets=[4] * 40)
    got = aggregate(m)
    want = M.generation_metrics(replies(texts), REFS)
    for k, v in want.items():
        assert got[k] == pytest.approx(v), k
    assert got["perplexity"] == pytest.approx(np.exp(0.5))


def test_better_system_gets_an_interval_above_zero_and_equal_systems_straddle_it():
    bad = replies(["no idea"] * 40, stopped=False)
    good = replies([r.replace("nice", "good") for r in REFS])
    a, b = measure(bad, REFS), measure(good, REFS)
    table = bootstrap_deltas(a, b, resamples=300, confidence=0.95, seed=1)
    for k in ("chrf", "bleu", "rougeL", "unigram_f1", "stop_rate"):
        row = table[k]
        assert row["delta"] > 0 and row["low"] > 0 and row["low"] <= row["delta"] <= row["high"], (k, row)
        assert row["p_b_better"] == 1.0
    assert table["chrf"]["a"] == pytest.approx(M.chrf([r["text"] for r in bad], REFS))

    mixed = replies([r if i % 2 else "no idea" for i, r in enumerate(REFS)])
    same = bootstrap_deltas(measure(mixed, REFS), measure(mixed, REFS), resamples=100, seed=0)
    assert same["chrf"]["delta"] == 0 and same["chrf"]["low"] == 0 == same["chrf"]["high"]


def test_leave_one_out_distinct_equals_recomputing_without_each_sample():
    texts = ["a b c a", "a b", "d e f", "c c c", ""]
    m = measure(replies(texts))
    for key, metric in (("grams1", "distinct_1"), ("grams2", "distinct_2")):
        want = [aggregate(m, np.array([j for j in range(len(texts)) if j != i]))[metric] for i in range(len(texts))]
        assert leave_one_out_distinct(m[key]) == pytest.approx(want)


def test_distinct_interval_contains_the_corpus_delta():
    """Resampling with repeats lowers corpus distinct-n; the bootstrap's percentile interval missed B - A."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    varied = [" ".join(rng.choice(words, 8)) for _ in range(60)]
    narrow = [" ".join(rng.choice(words[:40], 8)) for _ in range(60)]
    table = bootstrap_deltas(measure(replies(varied)), measure(replies(narrow)), resamples=300, seed=0)
    for k in ("distinct_1", "distinct_2"):
        row = table[k]
        assert row["delta"] < 0 and row["low"] <= row["delta"] <= row["high"] < 0, (k, row)
        assert row["p_b_better"] < 0.01


def test_bootstrap_is_seeded_and_rejects_unpaired_inputs():
    a, b = measure(replies(REFS[:20]), REFS[:20]), measure(replies(["x y"] * 20), REFS[:20])
    assert bootstrap_deltas(a, b, 50, seed=3) == bootstrap_deltas(a, b, 50, seed=3)
    with pytest.raises(ValueError):
        bootstrap_deltas(a, measure(replies(["x"] * 3), REFS[:3]))


def test_format_interval():
    assert format_interval({"delta": 3.712, "low": 1.2, "high": 6.05}) == "+3.71 [+1.2, +6.05]"
    assert format_interval({"delta": -0.5, "low": None}) == "-0.5"
