"""The comparison says when chrF moved with the replies' length (chrF's recall weighting cannot judge that)."""

from tailor.eval.compare import length_caveats
from tailor.eval import metrics as M
from tailor.report.html import metrics_section


def row(a, b, low, high):
    return {"a": a, "b": b, "delta": b - a, "low": low, "high": high}


# The figures of a real `make demo` comparison (3 Dec 2026): shorter replies, lower chrF.
DEMO = {"chrf": row(17.84, 11.55, -8.9, -3.45), "response_tokens": row(42.9, 17.9, -30.0, -19.8),
        "bleu": row(0.22, 2.04, 0.27, 3.21)}


def test_chrf_falling_with_shorter_replies_is_flagged():
    (note,) = length_caveats(DEMO)
    assert "chrF fell (17.8 -> 11.6)" in note and "shorter (42.9 -> 17.9 tokens)" in note
    assert "cannot judge" in note


def test_no_caveat_when_length_or_chrf_did_not_move_or_moved_apart():
    assert length_caveats({**DEMO, "response_tokens": row(42.9, 40.0, -5.0, 1.0)}) == []
    assert length_caveats({**DEMO, "chrf": row(17.8, 17.0, -2.0, 0.5)}) == []
    assert length_caveats({**DEMO, "chrf": row(11.0, 17.0, 3.0, 9.0)}) == []  # better while shorter: it stands
    longer = {"chrf": row(11.0, 17.0, 3.0, 9.0), "response_tokens": row(17.9, 42.9, 19.8, 30.0)}
    assert "chrF rose" in length_caveats(longer)[0]
    assert length_caveats({"chrf": DEMO["chrf"]}) == []  # no length row: nothing to say


def test_the_premise_holds_for_sacrebleu_chrf():
    # The same words the short reply has, and more of the reference: chrF rewards the length's recall.
    reference = ["i was at the beach all weekend with my family"]
    assert M.chrf(["the beach all weekend with my family and my dog and a book"], [reference]) > \
        M.chrf(["the beach"], [reference])


def test_the_report_shows_the_caveat():
    test = {"base": {"chrf": 17.84, "response_tokens": 42.9}, "fine_tuned": {"chrf": 11.55, "response_tokens": 17.9}}
    html = metrics_section(test, {"metrics": DEMO, "confidence": 0.95, "samples": 32, "resamples": 1000})
    assert 'class="caveat"' in html and "cannot judge this change" in html
