"""What makes two records the same: their content as the model sees it, not their id or their line.

Splits are drawn from a hash of this key, so a record repeated in the data (an FAQ corpus that files the
same question and answer under several topics) lands in one split only, and `data.dedupe` keeps the first
of each group of repeats. Pure functions over plain dicts.

    >>> record_key({"text": " A  film\\n", "label": 1}, ["text", "label"]) == record_key({"text": "A film", "label": "1"}, ["text", "label"])
    True
    >>> a = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    >>> conversation_key(a) == conversation_key([dict(m, content=m["content"] + " ") for m in a])
    True
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def normalise(text: str) -> str:
    """Unicode NFC, every run of whitespace as one space, none at the ends.

    >>> normalise("  Caf\\u0065\\u0301\\t au  lait\\n")
    'Café au lait'
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def record_key(record: dict, fields: list[str]) -> str:
    """The normalised values of `fields`, in order (a missing field counts as empty)."""
    return "\x1f".join(normalise(str(record.get(f, ""))) for f in fields)


def conversation_key(messages: list[dict]) -> str:
    """Every turn of a conversation, system turn included: its role and normalised text."""
    return "\x1e".join(f"{m['role']}\x1f{normalise(m['content'])}" for m in messages)


def bucket(key: str) -> float:
    """A number in [0, 1] from a hash of the key: stable across runs, seeds, machines and data order."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def first_occurrences(items: Iterable[T], key: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """(the first item of each key, in order; the later repeats, in order).

    >>> first_occurrences(["a", "b", "A", "c", "b"], str.lower)
    (['a', 'b', 'c'], ['A', 'b'])
    """
    seen: set[str] = set()
    kept, repeats = [], []
    for item in items:
        k = key(item)
        (repeats if k in seen else kept).append(item)
        seen.add(k)
    return kept, repeats
