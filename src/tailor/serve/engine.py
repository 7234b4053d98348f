"""The batching scheduler: one thread runs the model; concurrent requests share its decoding steps.

Requests wait in a bounded queue (`submit` raises QueueFull when it is full: HTTP 429). Between
decoding steps the scheduler admits waiting requests into the running batch (continuous batching):
`generate.decoder.Decoder`, the decoder every command uses, prefills them together and joins them to
the batch. Each step picks every row's tokens with that row's own settings, so a greedy request and a
sampled one can share a batch; a lone greedy request drafts ahead (decode.lookahead). A row leaves the
batch when it ends its turn, reaches its token limit, hits a stop string, passes its deadline, or is
cancelled (its client went away); its slot is free at the next step.

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

from tailor.generate.decoder import Decoder, Row
from tailor.kernels import patched
from tailor.generate.sampling import Sampling  # noqa: F401  (the server's request settings)

log = logging.getLogger("tailor.serve")


class QueueFull(Exception):
    """The waiting queue is at its limit; the client should retry later."""


@dataclass
class Sequence(Row):
    """One request travelling through the scheduler: a decoder row with its client and deadline."""

    on_event: Callable[[tuple], None]
    deadline: float  # time.monotonic() after which the request is abandoned
    id: int = field(default_factory=itertools.count().__next__)
    sent: int = 0  # characters of the decoded reply already delivered
    counted: int = 0  # tokens of the reply already in the statistics
    cancelled: bool = False
    finished: bool = False
    track_text: bool = field(default=True, kw_only=True)  # replies stream as text

    def cancel(self) -> None:
        """Called from any thread (e.g. when the client disconnects): the row leaves at the next step."""
        self.cancelled = True


class Engine:
    """Owns the model; `start()` launches the scheduler thread, `stop()` ends it."""

    def __init__(self, model, tokenizer, stop_ids: list[int], max_batch: int = 8, max_queue: int = 32,
                 draft: int = 0, kernels: bool = True):
        self.model = model.eval()
        self.kernels = kernels  # decode.kernels: the C++ kernels or torch's own ops
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.max_batch = max_batch
        self.max_queue = max_queue
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.decoder = Decoder(self.model, stop_ids, pad_id, tokenizer, draft)
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
        with patched(self.model, training=False, enabled=self.kernels):
            self._serve()

    def _serve(self) -> None:
        decoder = self.decoder
        while True:
            with self.cond:
                self._drop_waiting_expired()
                while self.running and not self.waiting and not decoder.size:
                    self.cond.wait(timeout=1.0)
                    self._drop_waiting_expired()
                if not self.running:
                    break
                newcomers = [self.waiting.popleft() for _ in range(min(self.max_batch - decoder.size, len(self.waiting)))]
            try:
                if newcomers:
                    decoder.add(newcomers)
                    self.stats["steps"] += 1
                    self._deliver_all(newcomers)
                self.largest_batch = max(self.largest_batch, decoder.size)
                self._retire()
                if decoder.size:
                    rows = list(decoder.rows)
                    decoder.step()
                    self.stats["steps"] += 1
                    self._deliver_all(rows)
                    self._retire()
            except Exception as e:  # a failure in the model must not leave clients hanging
                log.exception("generation failed")
                for seq in list(decoder.rows) + newcomers:
                    if not seq.finished:
                        seq.finished = True
                        seq.on_event(("error", "server_error", f"generation failed: {e}"))
                decoder.reset()
            self.active_count = decoder.size
        for seq in list(decoder.rows) + list(self.waiting):
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

    def _deliver_all(self, seqs: list[Sequence]) -> None:
        """Send each row's new text; a row the decoder ended is finished with its reason."""
        for seq in seqs:
            if seq.finished or seq.cancelled:
                continue
            self.stats["tokens"] += len(seq.generated) - seq.counted
            seq.counted = len(seq.generated)
            self._deliver(seq, final=seq.done is not None)
            if seq.done is not None:
                self._finish(seq, seq.done)

    def _deliver(self, seq: Sequence, final: bool) -> None:
        """Send the reply's new characters: up to a stop string, and while the reply runs, short of what
        may be half a character or the start of a stop string."""
        text = seq.text
        end = seq.cut if seq.cut is not None else len(text)
        if not final:
            if text.endswith("\ufffd"):
                end = min(end, len(text.rstrip("\ufffd")))  # half of a multi-byte character: wait for the rest
            hold = max((len(s) for s in seq.sampling.stop), default=1) - 1
            end = min(end, len(text) - hold)  # might be the start of a stop string
        if end > seq.sent:
            seq.on_event(("delta", text[seq.sent:end]))
            seq.sent = end

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finished = True
        self.stats["completed"] += 1
        seq.on_event(("done", reason, len(seq.generated)))

    def _retire(self) -> None:
        now = time.monotonic()
        for seq in self.decoder.rows:
            if not seq.finished and (seq.cancelled or now > seq.deadline):
                self._finish_abandoned(seq, now)
        self.decoder.keep([seq for seq in self.decoder.rows if not seq.finished])
