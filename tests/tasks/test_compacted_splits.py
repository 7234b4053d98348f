"""Prepared splits are copied into fresh objects so that the parsed source they were cut from is freed whole."""

import re

from tailor import workflow
from tailor.config import load_config
from tailor.tasks import get_task
from tailor.tasks.splits import Splits


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


def test_setup_compacts_what_the_task_prepared(tiny_config, monkeypatch):
    made = []
    real = Splits.compacted
    monkeypatch.setattr(Splits, "compacted", lambda self: made.append(self) or real(self))
    cfg = load_config(tiny_config())
    _, _, splits = workflow.setup(cfg, get_task(cfg.task))
    assert len(made) == 1 and splits == made[0] and splits is not made[0] and splits.train
