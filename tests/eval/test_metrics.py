"""Metric functions against published or library reference values."""

import math

import pytest
from hypothesis import given, strategies as st

from tailor.eval import metrics as M

# The example of sacrebleu's README: BLEU = 48.53, chrF2 = 59.73 (two reference streams).
SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REF_STREAMS = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
               ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
REFS = [list(r) for r in zip(*REF_STREAMS)]  # per hypothesis


def test_bleu_and_chrf_match_the_sacrebleu_readme():
    assert round(M.bleu(SYS, REFS), 2) == 48.53
    assert round(M.chrf(SYS, REFS), 2) == 59.73


def test_bleu_and_chrf_from_summed_sample_stats_equal_the_corpus_score():
    import sacrebleu

    hyps = ["a cat sat on the mat", "hello there my friend", "no", "the weather is nice today"]
    refs = ["the cat sat on the mat", "hello my friend", "yes", "it is a nice day today"]
    assert M.bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert M.chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    stats = M.bleu_stats(hyps, refs)
    assert len(stats) == 4
    assert M.bleu_from_stats(stats[:2]) == pytest.approx(sacrebleu.corpus_bleu(hyps[:2], [refs[:2]]).score)
    assert M.bleu(["the cat sat on it"], ["the cat sat on it"]) == pytest.approx(100.0)
    assert M.bleu([], []) == 0.0


def test_rouge_hand_computed():
    # Target and prediction of the rouge-score README, computed by hand with Porter stems:
    # R1: 6 common unigrams, P 6/8, R 6/9; R2: 2 common bigrams of 7 and 8; RL: LCS 5.
    target = "The quick brown fox jumps over the lazy dog"
    pred = "The quick brown dog jumps on the log."
    r = M.rouge([pred], [target])
    assert r["rouge1"] == pytest.approx(2 * (6 / 8) * (6 / 9) / (6 / 8 + 6 / 9))
    assert r["rouge2"] == pytest.approx(4 / 15)
    assert r["rougeL"] == pytest.approx(50 / 85)
    # Several references: the best one counts.
    assert M.rouge([pred], [[target, pred]])["rouge1"] == pytest.approx(1.0)


def test_unigram_f1_squad_normalisation():
    assert M.unigram_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert M.unigram_f1("Hello, World!", "hello world") == 1.0
    assert M.unigram_f1("nothing shared", "entirely different") == 0.0
    assert M.unigram_f1("", "") == 1.0 and M.unigram_f1("", "x") == 0.0
    assert M.unigram_f1("cat", ["dog", "cat"]) == 1.0


def test_distinct_and_repetition():
    assert M.distinct_n(["a b a b"], 1) == 0.5
    assert M.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert M.distinct_n(["a b", "a b"], 2) == 0.5
    assert M.distinct_n([""], 1) == 0.0
    # seq-rep-4: "a b c d a b c d" has 5 four-grams, 4 of them unique.
    assert M.repetition("a b c d a b c d") == pytest.approx(1 - 4 / 5)
    assert M.repetition("all words here differ entirely now") == 0.0
    assert M.repetition_rate(["a a a a a", "b c d e f"], n=1) == pytest.approx((1 - 1 / 5) / 2)


def test_lengths_stop_rate_perplexity():
    assert M.mean_length([3, 5, 10]) == 6
    assert M.stop_rate([True, False, True, True]) == 0.75
    assert M.perplexity(math.log(7) * 10, 10) == pytest.approx(7)
    assert M.token_accuracy(3, 4) == 0.75


def test_classification_matches_scikit_learn_docs():
    # sklearn.metrics.f1_score docs: macro F1 0.2666..., per class [0.8, 0, 0].
    y_true, y_pred = [0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 1]
    assert M.macro_f1(y_pred, y_true) == pytest.approx(0.26666, abs=1e-4)
    assert M.per_class_f1(y_pred, y_true) == pytest.approx({0: 0.8, 1: 0.0, 2: 0.0})
    # sklearn.metrics.confusion_matrix docs.
    assert M.confusion_matrix([0, 0, 2, 2, 0, 2], [2, 0, 2, 2, 0, 1]) == [[2, 0, 0], [0, 0, 1], [1, 0, 2]]
    m = M.classification_metrics(["pos", "neg", "pos"], ["pos", "pos", "pos"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == {"labels": ["neg", "pos"], "matrix": [[0, 0], [1, 2]]}


@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=30), st.lists(st.sampled_from("abc"), min_size=1, max_size=30))
def test_macro_f1_bounds_and_perfect(a, b):
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    assert 0 <= M.macro_f1(a, b) <= 1
    assert M.macro_f1(b, b) == 1.0
    assert sum(map(sum, M.confusion_matrix(a, b))) == n


def test_generation_metrics_bundle():
    replies = [{"text": "the cat sat", "tokens": 3, "stopped": True}, {"text": "hello hello hello hello hello", "tokens": 5, "stopped": False}]
    m = M.generation_metrics(replies, ["a cat sat", "hello"])
    assert m["response_tokens"] == 4 and m["stop_rate"] == 0.5
    assert m["unigram_f1"] == pytest.approx((1.0 + 2 * 0.2 * 1 / 1.2) / 2)
    assert 0 < m["chrf"] < 100 and 0 <= m["bleu"] <= 100 and 0 < m["rouge1"] <= 1
    assert m["repetition_rate"] == pytest.approx((0 + (1 - 1 / 2)) / 2)
    assert set(M.generation_metrics(replies)) == {"response_tokens", "stop_rate", "distinct_1", "distinct_2", "repetition_rate"}
    assert set(m) == set(M.GENERATION_METRICS)
