"""Prepared splits are copied into fresh objects so that the parsed source they were cut from is freed whole."""

import re
import weakref

from tailor import workflow
from tailor.config import load_config
from tailor.tasks import get_task
from tailor.tasks.splits import Splits, made_afresh


def anonymous_mib() -> int:
    text = open("/proc/self/smaps_rollup").read()
    return int(re.search(r"Anonymous:\s+(\d+)", text).group(1)) // 1024


def test_the_copy_is_equal_and_made_afresh():
    text = "".join(["a reply ", str(7)])  # made at run time: not an interned constant
    splits = Splits([{"input_ids": [1, 2, 3], "reply": text}], [{"reply": text + "!"}], [], {"samples": 2})
    copy = splits.compacted()
    assert copy == splits and isinstance(copy, Splits)
    assert copy.train[0]["reply"] is not text  # copy.deepcopy would have kept the same string
    assert copy.train[0] is not splits.train[0] and copy.train is not splits.train


def test_the_source_left_behind_is_given_back():
    """One kept string in every 200 holds nearly every arena of the source until the kept ones are made afresh."""
    source = [f"line {i} " + "x" * 40 for i in range(1_500_000)]  # ~130 MiB of small strings
    kept = Splits([{"text": s} for s in source[::200]], [], [])
    del source
    before = anonymous_mib()
    fresh = kept.compacted()
    del kept
    after = anonymous_mib()
    assert len(fresh.train) == 7500
    assert before - after > 60, (before, after)


_originals, alive_when_copied = [], []


def _rebuilt():
    alive_when_copied.append(_originals[-1]() is not None)
    return Marker.__new__(Marker)


class Marker:
    """Says, as its copy is made, whether the original is still alive."""

    def __init__(self):
        _originals.append(weakref.ref(self))

    def __reduce__(self):
        return _rebuilt, ()


def test_made_afresh_copies_only_once_the_original_is_freed():
    """A copy made while the source is freed only in part lands in its arenas' holes and keeps them: the demo's
    setup held 399 MiB of anonymous memory so, 344 made afresh (benchmarks/data_memory.py)."""
    alive_when_copied.clear()
    fresh = made_afresh(lambda: Splits([{"marker": Marker(), "text": "".join(["a", "b"])}], [], []))
    assert alive_when_copied == [False] and fresh.train[0]["text"] == "ab"
    Splits([{"marker": Marker()}], [], []).compacted()
    assert alive_when_copied == [False, True]  # the check can tell


def test_setup_makes_what_the_task_prepared_afresh(tiny_config, monkeypatch):
    made = []
    monkeypatch.setattr(workflow, "made_afresh", lambda make: made.append(make()) or made_afresh(lambda: made[0]))
    cfg = load_config(tiny_config())
    _, _, splits = workflow.setup(cfg, get_task(cfg.task))
    assert len(made) == 1 and splits == made[0] and splits is not made[0] and splits.train
