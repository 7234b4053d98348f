"""Choosing the next token: each row with its own settings, in the order transformers' `generate` applies them.

Repetition penalty and no-repeat n-grams first (on the logits), then temperature, top-k and top-p, then the
draw. A greedy row takes the argmax of its (penalised) logits. Rows of one batch may differ: the server joins
a greedy request and a sampled one into one decoding step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig


@dataclass
class Sampling:
    """One reply's decoding settings."""

    max_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off
    no_repeat_ngram_size: int = 0  # 0 = off
    stop: list[str] = field(default_factory=list)  # stop strings: the reply ends before the first one
    seed: int | None = None

    @property
    def plain_greedy(self) -> bool:
        """The argmax of the raw logits: what lookahead can draft for and a batched argmax can serve."""
        return self.temperature <= 0 and self.repetition_penalty == 1.0 and not self.no_repeat_ngram_size

    @classmethod
    def of(cls, gen: GenerationConfig) -> "Sampling":
        """The settings of a GenerationConfig (the fields `decoder.HANDLED` lists)."""
        sample = bool(gen.do_sample)
        return cls(max_tokens=gen.max_new_tokens, temperature=gen.temperature if sample else 0.0,
                   top_k=(gen.top_k or 0) if sample else 0, top_p=(gen.top_p or 1.0) if sample else 1.0,
                   repetition_penalty=gen.repetition_penalty or 1.0,
                   no_repeat_ngram_size=gen.no_repeat_ngram_size or 0, stop=list(gen.stop_strings or []))


def repeated_ngram_bans(tokens: list[int], n: int) -> list[int]:
    """The tokens that would complete an n-gram already in `tokens`, as transformers' no_repeat_ngram_size.

    >>> repeated_ngram_bans([1, 2, 3, 1, 2], 3)
    [3]
    """
    if n <= 0 or len(tokens) < n:
        return []
    prefix = tokens[len(tokens) - n + 1:]
    return sorted({tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i:i + n - 1] == prefix})


def nucleus(ascending: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits (n,) sorted ascending, with the tokens outside the top-p mass set to -inf (transformers' rule)."""
    if top_p >= 1.0:
        return ascending
    drop = ascending.softmax(-1).cumsum(-1) <= 1 - top_p
    drop[-1] = False  # always keep the most likely token
    return ascending.masked_fill(drop, float("-inf"))


def draw(scores: torch.Tensor, s: Sampling, generator: torch.Generator | None) -> int:
    """A token drawn from one row's float logits (V,) after temperature, top-k and top-p."""
    scores = scores / s.temperature
    if 0 < s.top_k < scores.numel():
        # Only the k best can be drawn, so top-p and the draw run on those k, not on a sorted vocabulary
        # (with that sort, a sampling step cost 3.3 ms more than a greedy one at batch 1 on SmolLM2's 49k tokens).
        values, index = torch.topk(scores, s.top_k)  # descending
        ascending = nucleus(values.flip(-1), s.top_p)
        drawn = int(torch.multinomial(ascending.softmax(-1), 1, generator=generator))
        return int(index[s.top_k - 1 - drawn])
    if s.top_p < 1.0:
        ascending, order = torch.sort(scores)
        dropped = torch.isinf(nucleus(ascending, s.top_p))
        scores = scores.masked_fill(dropped.scatter(0, order, dropped), float("-inf"))
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))


def pick(logits: torch.Tensor, rows: list) -> torch.Tensor:
    """Next token per row (B,) from float logits (B, V); `rows` have .sampling, .prompt, .generated, .generator."""
    logits = logits.clone()
    for b, row in enumerate(rows):
        s = row.sampling
        if s.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(row.prompt) | set(row.generated)), dtype=torch.long)
            scores = logits[b, seen]
            logits[b, seen] = torch.where(scores > 0, scores / s.repetition_penalty, scores * s.repetition_penalty)
        if s.no_repeat_ngram_size:  # the scan is over the whole history: only for rows that ask for it
            banned = repeated_ngram_bans(row.prompt + row.generated, s.no_repeat_ngram_size)
            if banned:
                logits[b, banned] = float("-inf")
    out = logits.argmax(dim=-1)  # (B,): greedy unless the row samples
    for b, row in enumerate(rows):
        if row.sampling.temperature > 0:
            out[b] = draw(logits[b], row.sampling, row.generator)
    return out
