"""The one decoder of causal language models: prefill, decoding steps, sampling, stops, lookahead, the KV cache.

`tailor generate`, chat, eval, compare (through `replies.generate`) and the server's continuous batching
(`serve.engine`) all decode here. A `Decoder` holds running rows (`Row`: a prompt, its `Sampling`, the tokens
so far); `add` prefills new rows and joins them to the batch, `step` runs one forward for every row, `keep`
drops rows that left. Rows of one batch may differ in length, settings and stop strings.

Two caches under one interface:
- `LeanCache`, Llama-family decoders on CPU: `lean.Lean`'s forward (fused products, the kernel) and a
  preallocated cache in which each row keeps its own slots (left padding `pad`, next free slot `start`), so
  rows that joined at different times need no realignment. Greedy replies equal `model.generate`'s.
- `ForwardCache`, any other causal LM and any device: the model's own forward and transformers' DynamicCache,
  left-padded to the longest row; joining left-pads the shorter cache.

Lookahead (`draft` > 0) applies while the batch is one plain-greedy row on the lean cache (see lean.py): a
server with one client drafts, and stops drafting when a second request joins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, GenerationConfig

from tailor import device as devices
from tailor.generate import lean
from tailor.kernels import argmax
from tailor.generate.sampling import Sampling, pick

# GenerationConfig fields the decoder implements; any other non-default field means transformers' `generate`.
HANDLED = {"max_new_tokens", "do_sample", "num_beams", "temperature", "top_k", "top_p", "repetition_penalty",
           "no_repeat_ngram_size", "stop_strings", "eos_token_id", "pad_token_id", "transformers_version"}


def supports(model, gen: GenerationConfig) -> bool:
    """True when the decoder implements everything `gen` asks for, for a decoder-only model."""
    if getattr(model.config, "is_encoder_decoder", False) or gen.num_beams not in (None, 1):
        return False
    return set(gen.to_diff_dict()) <= HANDLED


@dataclass
class Row:
    """One reply being decoded. `done` is None while it runs, then "stop" (a stop token or string) or "length"."""

    prompt: list[int]
    sampling: Sampling
    generator: torch.Generator | None = field(default=None, kw_only=True)
    generated: list[int] = field(default_factory=list, kw_only=True)
    done: str | None = field(default=None, kw_only=True)
    text: str = field(default="", kw_only=True)  # the reply so far, kept when `track_text` or stop strings ask
    cut: int | None = field(default=None, kw_only=True)  # where in `text` the first stop string begins
    track_text: bool = field(default=False, kw_only=True)


class ForwardCache:
    """The model's forward and transformers' DynamicCache, rows left-padded to one length."""

    def __init__(self, model, ids: torch.Tensor, mask: torch.Tensor, room: int):
        self.model = model
        self.mask = mask  # (B, T): 1 where a cached key is real, 0 where it is left padding
        self.position = lean.positions(mask)  # (B, T)
        self.cache = DynamicCache(config=model.config)
        self.first = model(input_ids=ids, attention_mask=mask, position_ids=self.position, past_key_values=self.cache,
                           use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, V)
        self.position = self.position[:, -1]  # (B,): each row's last position

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, V) after one new token per row (B, 1)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        self.position = self.position + 1
        return self.model(input_ids=tokens, attention_mask=self.mask, position_ids=self.position[:, None],
                          past_key_values=self.cache, use_cache=True).logits

    def advance(self, kept: list[int]) -> None:
        pass  # one token per step, taken into the cache by `step`

    def keep(self, rows: torch.Tensor) -> None:
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[rows], layer.values[rows]
        self.mask, self.position = self.mask[rows], self.position[rows]
        used = self.mask.any(dim=0).nonzero()  # columns that are padding in every remaining row carry nothing
        start = int(used[0]) if len(used) else 0
        if start > 0:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
            self.mask = self.mask[:, start:]

    def join(self, other: "ForwardCache") -> None:
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([left_pad(mine.keys, width), left_pad(theirs.keys, width)])
            mine.values = torch.cat([left_pad(mine.values, width), left_pad(theirs.values, width)])
        self.mask = torch.cat([left_pad(self.mask, width, dim=1), left_pad(other.mask, width, dim=1)])
        self.position = torch.cat([self.position, other.position])


def left_pad(x: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


class LeanCache:
    """`lean.Lean`: each row's keys at its own slots pad[b] .. start[b] - 1 of a preallocated cache."""

    def __init__(self, model, ids: torch.Tensor, mask: torch.Tensor, room: int):
        self.lean = lean.Lean(model, ids.shape[0], ids.shape[1] + room)
        self.first = self.lean.prefill(ids, mask)  # (B, V)
        self.pad = (mask == 0).sum(-1)  # (B,)
        self.start = torch.full((ids.shape[0],), ids.shape[1])  # (B,): each row's next free slot

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lean.forward(tokens, self.start, self.pad)  # (B, q, V)

    def advance(self, kept: list[int]) -> None:
        self.start += torch.tensor(kept)

    def keep(self, rows: torch.Tensor) -> None:
        self.pad, self.start = self.pad[rows], self.start[rows]
        lead = int(self.pad.min())  # slots that are padding in every remaining row
        store = self.lean
        store.keys = [k[rows, :, lead:] for k in store.keys]
        store.values = [v[rows, :, lead:] for v in store.values]
        self.pad, self.start = self.pad - lead, self.start - lead

    def join(self, other: "LeanCache") -> None:
        length = max(self.lean.keys[0].shape[2], other.lean.keys[0].shape[2])

        def room(x: torch.Tensor) -> torch.Tensor:  # free slots at the end: rows keep their slot numbers
            return torch.cat([x, x.new_zeros(*x.shape[:2], length - x.shape[2], x.shape[3])], dim=2)

        store = self.lean
        store.keys = [torch.cat([room(a), room(b)]) for a, b in zip(store.keys, other.lean.keys)]
        store.values = [torch.cat([room(a), room(b)]) for a, b in zip(store.values, other.lean.values)]
        self.pad, self.start = torch.cat([self.pad, other.pad]), torch.cat([self.start, other.start])


class Decoder:
    """Running rows of one model, decoded together."""

    def __init__(self, model, stop_ids, pad_id: int = 0, tokenizer=None, draft: int = 0,
                 use_lean: bool | None = None):
        self.model = model
        self.stops = set(stop_ids)
        self.pad_id = pad_id
        self.tokenizer = tokenizer  # decodes the text of rows with stop strings or `track_text`
        self.where = devices.of(model)
        if use_lean is None:
            use_lean = devices.is_cpu(self.where) and lean.supports(model)
        self.cache_type = LeanCache if use_lean else ForwardCache
        # Checked drafts give the one-token steps' tokens only where every product rounds row by row (lean.py).
        self.draft = draft if use_lean and draft and lean.drafts_exact(model) else 0
        self.rows: list[Row] = []
        self.cache = None

    @property
    def size(self) -> int:
        return len(self.rows)

    def reset(self) -> None:
        self.rows, self.cache = [], None

    @torch.inference_mode()
    def add(self, rows: list[Row]) -> None:
        """Prefill `rows` together, give each its first token, and join them to the running batch."""
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, row in enumerate(rows):  # left padding: every prompt ends where its reply starts
            ids[b, width - len(row.prompt):] = torch.tensor(row.prompt, dtype=torch.long)
            mask[b, width - len(row.prompt):] = 1
        room = max(r.sampling.max_tokens for r in rows) + self.draft + 1
        cache = self.cache_type(self.model, devices.put(ids, self.where), devices.put(mask, self.where), room)
        for row, token in zip(rows, self.choose(cache.first[:, None], rows)):
            self.take(row, token[:1])
        if self.cache is None:
            self.cache, self.rows = cache, list(rows)
        else:
            self.cache.join(cache)
            self.rows = self.rows + list(rows)

    @torch.inference_mode()
    def step(self) -> None:
        """One forward for every row: each running row gets its next token (more with accepted drafts)."""
        rows = self.rows
        drafting = self.draft and len(rows) == 1 and rows[0].done is None and rows[0].sampling.plain_greedy
        drafts = [lean.lookup(rows[0].prompt + rows[0].generated, self.draft)] if drafting else [[] for _ in rows]
        width = 1 + max(map(len, drafts))
        tokens = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for b, row in enumerate(rows):  # a stopped row (kept by `decode` until all stop) is fed padding
            step = [row.generated[-1] if row.done is None else self.pad_id] + drafts[b]
            tokens[b, :len(step)] = torch.tensor(step)
        logits = self.cache.step(devices.put(tokens, self.where))  # (B, q, V)
        chosen = self.choose(logits, rows)
        kept = []
        for b, row in enumerate(rows):
            n = 0
            while n < len(drafts[b]) and drafts[b][n] == chosen[b][n]:
                n += 1
            kept.append(n + 1)  # stopped rows too: rows without padding stay at one slot
            if row.done is None:
                self.take(row, chosen[b][:n + 1])
        self.cache.advance(kept)

    def keep(self, rows: list[Row]) -> None:
        """Continue with these rows only (in this order of the running ones)."""
        index = [i for i, r in enumerate(self.rows) if any(r is k for k in rows)]
        if not index:
            self.reset()
        elif len(index) < len(self.rows):
            self.cache.keep(torch.tensor(index, device=self.where))
            self.rows = [self.rows[i] for i in index]

    def choose(self, logits: torch.Tensor, rows: list[Row]) -> list[list[int]]:
        """Each row's tokens for the logits (B, q, V): argmax at every position for plain greedy batches
        (checked drafts need all q), else the row's own settings on the last position."""
        if all(r.sampling.plain_greedy for r in rows):
            # The argmax of the logits cast to fp32 (the indices generate picks); on CPU the kernel's bf16 scan.
            return (argmax(logits) if devices.is_cpu(logits.device) else logits.float().argmax(-1)).tolist()
        return pick(logits[:, -1].float().cpu(), rows)[:, None].tolist()  # each row's seeded generator is a CPU one

    def take(self, row: Row, tokens: list[int]) -> None:
        for token in tokens:
            row.generated.append(token)
            if token in self.stops:
                row.done = "stop"
            elif (row.sampling.stop or row.track_text) and self.read(row):
                row.done = "stop"  # a stop string appeared
            elif len(row.generated) >= row.sampling.max_tokens:
                row.done = "length"
            if row.done:
                return

    def read(self, row: Row) -> bool:
        """Update the row's text; True when a stop string is in it."""
        row.text = self.tokenizer.decode([t for t in row.generated if t not in self.stops], skip_special_tokens=True)
        found = [at for at in (row.text.find(s) for s in row.sampling.stop) if at != -1]
        row.cut = min(found) if found else None
        return row.cut is not None


@torch.inference_mode()
def decode(model, ids: torch.Tensor, mask: torch.Tensor, gen: GenerationConfig,
           generator: torch.Generator | None = None, draft: int = 0, tokenizer=None,
           use_lean: bool | None = None) -> torch.Tensor:
    """New tokens (B, n <= max_new_tokens) after left-padded prompts `ids`, `mask` (B, P), as `generate`
    returns them: a row that stopped (stop token or string) is padded with gen.pad_token_id from then on;
    decoding ends when every row has stopped. Stop strings need the tokenizer."""
    eos = gen.eos_token_id
    stops = eos if isinstance(eos, list) else [] if eos is None else [eos]
    pad_id = gen.pad_token_id if gen.pad_token_id is not None else 0
    decoder = Decoder(model, stops, pad_id, tokenizer, draft, use_lean)
    sampling = Sampling.of(gen)
    rows = [Row(ids[b, mask[b].bool()].tolist(), sampling, generator=generator) for b in range(ids.shape[0])]
    decoder.add(rows)
    while any(r.done is None for r in rows):
        decoder.step()
    n = max(len(r.generated) for r in rows)
    out = torch.full((len(rows), n), pad_id, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, :len(row.generated)] = torch.tensor(row.generated, dtype=torch.long)
    return out
