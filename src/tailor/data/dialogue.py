"""Turn conversations into (history -> response) samples. Pure functions over plain dicts."""

from __future__ import annotations

from tailor.data.content import bucket, conversation_key, first_occurrences

SPLITS = ("train", "validation", "test")


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


def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
    """A split from a hash of `key` (a conversation's content key, data/content.py): stable across runs,
    seeds and data order, and the same for every copy of a conversation whatever its id."""
    b = bucket(key)
    if b < test_fraction:
        return "test"
    if b < test_fraction + val_fraction:
        return "validation"
    return "train"


def split_conversations(conversations: list[dict], val_fraction: float, test_fraction: float,
                        dedupe: bool = False) -> tuple[dict[str, list[dict]], list[dict]]:
    """({split: conversations}, repeats): each conversation's split drawn from a hash of its turns (so exact
    repeats share a split), after dropping the repeats (all but the first of each) when `dedupe`; `repeats`
    lists the conversations that repeat an earlier one either way.

    >>> hi = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    >>> convs = [{"id": str(i), "messages": hi if i % 2 else [dict(m, content=f"{m['content']} {i}") for m in hi]}
    ...          for i in range(40)]
    >>> by_split, repeats = split_conversations(convs, 0.3, 0.3)
    >>> len(repeats), sum(len(c) for c in by_split.values())
    (19, 40)
    >>> sum(any(c["messages"] == hi for c in cs) for cs in by_split.values())  # all 20 copies in one split
    1
    >>> sum(len(c) for c in split_conversations(convs, 0.3, 0.3, dedupe=True)[0].values())
    21
    """
    kept, repeats = first_occurrences(conversations, lambda c: conversation_key(c["messages"]))
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for conv in kept if dedupe else conversations:
        by_split[split_of(conversation_key(conv["messages"]), val_fraction, test_fraction)].append(conv)
    return by_split, repeats
