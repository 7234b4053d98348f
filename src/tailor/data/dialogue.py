"""Turn conversations into (history -> response) samples. Pure functions over plain dicts."""

from __future__ import annotations

import hashlib


def windows(conversation: dict, history_turns: int, system_prompt: str | None = None) -> list[dict]:
    """One sample per assistant turn: the last K turns before it as history, then the turn itself
    (a history that would open with an assistant turn loses that turn: chat templates expect the user first).

    >>> conv = {"id": "c", "origin": "f:1", "messages": [
    ...     {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
    ...     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    >>> [[m["content"] for m in s["messages"]] for s in windows(conv, 2)]
    [['a', 'b'], ['c', 'd']]
    """
    messages = conversation["messages"]
    system = [m for m in messages[:1] if m["role"] == "system"]
    if system_prompt is not None:
        system = [{"role": "system", "content": system_prompt}]
    turns = [m for m in messages if m["role"] != "system"]
    samples = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant" or i == 0:
            continue
        history = turns[max(0, i - history_turns) : i]
        while history and history[0]["role"] != "user":
            history = history[1:]  # chat templates expect the history to open with the user
        if not history:
            continue
        samples.append(
            {"id": conversation["id"], "origin": conversation["origin"], "messages": system + history + [turn]}
        )
    return samples


def split_of(conversation_id: str, val_fraction: float, test_fraction: float) -> str:
    """A conversation's split, from a hash of its id: stable across runs, seeds and data order."""
    bucket = int(hashlib.sha1(conversation_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "validation"
    return "train"
