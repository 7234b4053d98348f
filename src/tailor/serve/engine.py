"""The batching scheduler: one thread runs the model; concurrent requests share its forward passes.

Requests wait in a bounded queue (`submit` raises QueueFull when it is full: HTTP 429). Between
decoding steps the scheduler admits waiting requests into the running batch (continuous batching):
their prompts are prefilled together, then their key/value cache is left-padded to the batch's
length and joined to it. Each step samples one token per row with that row's own settings, so a
greedy request and a sampled one can share a batch. A row leaves the batch when it ends its turn,
reaches its token limit, hits a stop string, passes its deadline, or is cancelled (its client went
away); its slot is free at the next step.

Tokens reach the caller through `Sequence.on_event`, called from the scheduler thread: events are
("delta", text), ("done", finish_reason) and ("error", kind, message).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import DynamicCache

from tailor import device as devices

log = logging.getLogger("tailor.serve")


class QueueFull(Exception):
    """The waiting queue is at its limit; the client should retry later."""


@dataclass
class Sampling:
    """One request's decoding settings (already bounded by the server's limits)."""

    max_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off
    no_repeat_ngram_size: int = 0  # 0 = off
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Sequence:
    """One request travelling through the scheduler."""

    prompt: list[int]
    sampling: Sampling
    on_event: Callable[[tuple], None]
    deadline: float  # time.monotonic() after which the request is abandoned
    id: int = field(default_factory=itertools.count().__next__)
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded reply already delivered
    cancelled: bool = False
    finished: bool = False
    generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Called from any thread (e.g. when the client disconnects): the row leaves at the next step."""
        self.cancelled = True


class Engine:
    """Owns the model; `start()` launches the scheduler thread, `stop()` ends it."""

    def __init__(self, model, tokenizer, stop_ids: list[int], max_batch: int = 8, max_queue: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.cond = threading.Condition()
        self.running = False
        self.thread: threading.Thread | None = None
        # Every key exists from the start, so snapshot() can copy the dict while the engine thread counts.
        self.stats = collections.Counter(dict.fromkeys(
            ("submitted", "completed", "cancelled", "timed_out", "rejected", "steps", "tokens"), 0))
        self.active_count = 0
        self.largest_batch = 0

    # ---- public, called from the web server's threads --------------------------------------------
    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="tailor-engine", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def submit(self, seq: Sequence) -> Sequence:
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"the server's queue is full ({self.max_queue} waiting requests); retry later")
            if seq.sampling.temperature > 0:
                seq.generator = torch.Generator().manual_seed(
                    seq.sampling.seed if seq.sampling.seed is not None else int(torch.randint(0, 2**62, ()).item())
                )
            self.waiting.append(seq)
            self.stats["submitted"] += 1
            self.cond.notify_all()
        return seq

    def snapshot(self) -> dict:
        with self.cond:
            return {"waiting": len(self.waiting), "active": self.active_count, "largest_batch": self.largest_batch,
                    **dict(self.stats)}

    # ---- the scheduler thread --------------------------------------------------------------------
    def _loop(self) -> None:
        batch: Batch | None = None
        while True:
            with self.cond:
                self._drop_waiting_expired()
                while self.running and not self.waiting and batch is None:
                    self.cond.wait(timeout=1.0)
                    self._drop_waiting_expired()
                if not self.running:
                    break
                room = self.max_batch - (batch.size if batch else 0)
                newcomers = [self.waiting.popleft() for _ in range(min(room, len(self.waiting)))]
            try:
                with torch.inference_mode():
                    if newcomers:
                        fresh = self._prefill(newcomers)
                        batch = fresh if batch is None else batch.join(fresh)
                    if batch is not None:
                        self.largest_batch = max(self.largest_batch, batch.size)
                        batch = self._retire(batch)
                    if batch is not None:
                        self._decode_step(batch)
                        batch = self._retire(batch)
            except Exception as e:  # a failure in the model must not leave clients hanging
                log.exception("generation failed")
                for seq in (batch.seqs if batch else []) + newcomers:
                    if not seq.finished:
                        seq.finished = True
                        seq.on_event(("error", "server_error", f"generation failed: {e}"))
                batch = None
            self.active_count = batch.size if batch else 0
        for seq in (batch.seqs if batch else []) + list(self.waiting):
            if not seq.finished:
                seq.finished = True
                seq.on_event(("error", "server_error", "the server is shutting down"))

    def _drop_waiting_expired(self) -> None:
        now = time.monotonic()
        for seq in [s for s in self.waiting if s.cancelled or now > s.deadline]:
            self.waiting.remove(seq)
            self._finish_abandoned(seq, now)

    def _finish_abandoned(self, seq: Sequence, now: float) -> None:
        seq.finished = True
        if seq.cancelled:
            self.stats["cancelled"] += 1
        else:
            self.stats["timed_out"] += 1
            seq.on_event(("error", "timeout", "the request took longer than the server's time limit"))

    def _prefill(self, seqs: list[Sequence]) -> "Batch":
        width = max(len(s.prompt) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [B, T]
        for row, seq in enumerate(seqs):  # left padding: every prompt ends at the last column
            ids[row, width - len(seq.prompt):] = torch.tensor(seq.prompt)
            mask[row, width - len(seq.prompt):] = 1
        where = devices.of(self.model)
        ids, mask = devices.put(ids, where), devices.put(mask, where)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, T]
        cache = DynamicCache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        batch = Batch(seqs, out.past_key_values, mask, positions[:, -1])
        self._accept(batch, out.logits[:, -1, :].float())
        return batch

    def _decode_step(self, batch: "Batch") -> None:
        last = torch.tensor([s.generated[-1] for s in batch.seqs], dtype=torch.long, device=batch.mask.device)[:, None]  # [B, 1]
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((batch.size, 1))], dim=1)  # [B, T+1]
        batch.position = batch.position + 1  # [B]
        out = self.model(input_ids=last, attention_mask=batch.mask, position_ids=batch.position[:, None],
                         past_key_values=batch.cache, use_cache=True)
        batch.cache = out.past_key_values
        self._accept(batch, out.logits[:, -1, :].float())

    def _accept(self, batch: "Batch", logits: torch.Tensor) -> None:
        """Pick each row's next token, append it, and deliver the new text."""
        tokens = pick(logits.cpu(), batch.seqs)  # on the CPU: each request's seeded generator lives there
        self.stats["steps"] += 1
        for seq, token in zip(batch.seqs, tokens.tolist()):
            if seq.finished or seq.cancelled:
                continue
            seq.generated.append(token)
            self.stats["tokens"] += 1
            if token in self.stop_ids:
                self._deliver(seq, final=True)
                self._finish(seq, "stop")
                continue
            if self._deliver(seq, final=False):
                self._finish(seq, "stop")  # a stop string appeared
            elif len(seq.generated) >= seq.sampling.max_tokens:
                self._deliver(seq, final=True)
                self._finish(seq, "length")

    def _deliver(self, seq: Sequence, final: bool) -> bool:
        """Send the reply's new characters; True when a stop string ends it."""
        ids = [t for t in seq.generated if t not in self.stop_ids]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        end = len(text)
        hit = False
        for stop in seq.sampling.stop:
            at = text.find(stop, max(0, seq.sent - len(stop)))
            if at != -1 and at < end:
                end, hit = at, True
        if not hit and not final:
            if text.endswith("\ufffd"):
                end = len(text.rstrip("\ufffd"))  # half of a multi-byte character: wait for the rest
            hold = max((len(s) for s in seq.sampling.stop), default=1) - 1
            end = min(end, len(text) - hold)  # might be the start of a stop string
        if end > seq.sent:
            seq.on_event(("delta", text[seq.sent:end]))
            seq.sent = end
        return hit

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finished = True
        self.stats["completed"] += 1
        seq.on_event(("done", reason, len(seq.generated)))

    def _retire(self, batch: "Batch") -> "Batch | None":
        now = time.monotonic()
        keep = []
        for row, seq in enumerate(batch.seqs):
            if not seq.finished and (seq.cancelled or now > seq.deadline):
                self._finish_abandoned(seq, now)
            if not seq.finished:
                keep.append(row)
        if not keep:
            return None
        if len(keep) < batch.size:
            batch.select(keep)
        return batch


class Batch:
    """The running rows: their sequences, shared key/value cache, attention mask and positions."""

    def __init__(self, seqs: list[Sequence], cache: DynamicCache, mask: torch.Tensor, position: torch.Tensor):
        self.seqs = seqs
        self.cache = cache
        self.mask = mask  # [B, T]: 1 where a cached key is real, 0 where it is left padding
        self.position = position  # [B]: position of each row's last cached token

    @property
    def size(self) -> int:
        return len(self.seqs)

    def layers(self) -> list:
        return list(self.cache.layers)

    def select(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.seqs = [self.seqs[r] for r in rows]
        for layer in self.layers():
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        self.mask, self.position = self.mask[index], self.position[index]
        # Columns that are padding in every remaining row carry nothing: drop them.
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        if start > 0:
            for layer in self.layers():
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
            self.mask = self.mask[:, start:]

    def join(self, other: "Batch") -> "Batch":
        """Append `other`'s rows, left-padding whichever cache is shorter."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.layers(), other.layers()):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)], dim=0)
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)], dim=0)
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(other.mask, width, dim=1)], dim=0)
        self.position = torch.cat([self.position, other.position])
        self.seqs = self.seqs + other.seqs
        return self


def _left_pad(x: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def repeated_ngram_bans(tokens: list[int], n: int) -> list[int]:
    """The tokens that would complete an n-gram already in `tokens`, as transformers' no_repeat_ngram_size.

    >>> repeated_ngram_bans([1, 2, 3, 1, 2], 3)
    [3]
    """
    if n <= 0 or len(tokens) < n:
        return []
    prefix = tokens[len(tokens) - n + 1:]
    return sorted({tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i:i + n - 1] == prefix})


def pick(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Next token per row [B] from logits [B, V], each row with its own penalty, temperature, top-k, top-p."""
    logits = logits.clone()
    for row, seq in enumerate(seqs):
        s = seq.sampling
        if s.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(seq.prompt) | set(seq.generated)), dtype=torch.long)
            scores = logits[row, seen]
            logits[row, seen] = torch.where(scores > 0, scores / s.repetition_penalty, scores * s.repetition_penalty)
        if s.no_repeat_ngram_size:  # the scan is over the whole history: only for rows that ask for it
            banned = repeated_ngram_bans(seq.prompt + seq.generated, s.no_repeat_ngram_size)
            if banned:
                logits[row, banned] = float("-inf")
    out = logits.argmax(dim=-1)  # [B]: greedy unless the row samples
    for row, seq in enumerate(seqs):
        s = seq.sampling
        if s.temperature <= 0:
            continue
        scores = logits[row] / s.temperature  # [V]
        index = None
        if 0 < s.top_k < scores.numel():
            # Only the k best can be drawn: top-p and the draw run on them (already in descending
            # order), not on a sorted vocabulary, which cost milliseconds a row per step.
            scores, index = torch.topk(scores, s.top_k)  # [k]
        if s.top_p < 1.0:
            sorted_scores, order = (scores, None) if index is not None else torch.sort(scores, descending=True)
            probs = sorted_scores.softmax(-1)
            drop = probs.cumsum(-1) - probs > s.top_p  # keep the smallest prefix whose mass reaches top_p
            if order is not None:
                drop = torch.zeros_like(drop).scatter(0, order, drop)
            scores = scores.masked_fill(drop, float("-inf"))
        token = torch.multinomial(scores.softmax(-1), 1, generator=seq.generator)[0]
        out[row] = index[token] if index is not None else token
    return out
