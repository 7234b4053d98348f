"""The scheduler for encoder-decoder models (T5, BART, Marian): the same interface as `engine.Engine`
(submit / start / stop / snapshot, events through `Sequence.on_event`), one request at a time.

An encoder-decoder's prompt is the encoder's input, so there is no shared decoding batch to join: each
request is decoded whole by transformers' `generate` with its own settings, then its reply is delivered
as one "delta" and a "done" (a streaming client gets the whole reply in one chunk). Requests past their
deadline or cancelled before their turn never run; the queue is bounded as the causal engine's is.
"""

from __future__ import annotations

import logging
import time

import torch
from transformers import GenerationConfig

from tailor import device as devices
from tailor.serve.engine import Engine, Sequence

log = logging.getLogger("tailor.serve")


class Seq2SeqEngine(Engine):
    """Engine's queue, limits and statistics; its own loop: one request at a time, decoded whole."""

    def __init__(self, model, tokenizer, max_queue: int = 32):
        super().__init__(model, tokenizer, [], max_batch=1, max_queue=max_queue)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.running and not self.waiting:
                    self.cond.wait(timeout=1.0)
                if not self.running:
                    break
                seq = self.waiting.popleft()
            if seq.cancelled or time.monotonic() > seq.deadline:
                seq.finished = True
                self.stats["cancelled" if seq.cancelled else "timed_out"] += 1
                if not seq.cancelled:
                    seq.on_event(("error", "timeout", "the request took longer than the server's time limit"))
                continue
            self.active_count, self.largest_batch = 1, 1
            try:
                self._run(seq)
            except Exception as e:  # a failure in the model must not leave the client hanging
                log.exception("generation failed")
                seq.finished = True
                seq.on_event(("error", "server_error", f"generation failed: {e}"))
            self.active_count = 0
        for seq in list(self.waiting):
            seq.finished = True
            seq.on_event(("error", "server_error", "the server is shutting down"))

    @torch.inference_mode()
    def _run(self, seq: Sequence) -> None:
        s = seq.sampling
        sample = s.temperature > 0
        eos = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.model.config.eos_token_id
        gen = GenerationConfig(max_new_tokens=s.max_tokens, do_sample=sample, num_beams=1, eos_token_id=eos,
                               pad_token_id=self.tokenizer.pad_token_id, repetition_penalty=s.repetition_penalty,
                               no_repeat_ngram_size=s.no_repeat_ngram_size,
                               decoder_start_token_id=self.model.generation_config.decoder_start_token_id
                               or self.model.config.decoder_start_token_id,
                               **({"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p} if sample else {}))
        if sample:
            torch.manual_seed(s.seed if s.seed is not None else int(time.time_ns() % 2**62))
        ids = torch.tensor([seq.prompt], dtype=torch.long, device=devices.of(self.model))
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)
        new = out[0].tolist()[1:]  # the first id is the decoder start token
        stopped = eos in new
        new = new[: new.index(eos)] if stopped else new
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        hits = [text.index(stop) for stop in s.stop if stop in text]
        if hits:
            text, stopped = text[: min(hits)], True
        self.stats["steps"] += 1
        self.stats["tokens"] += len(new)
        seq.generated = new
        seq.finished = True
        self.stats["completed"] += 1
        if text:
            seq.on_event(("delta", text))
        seq.on_event(("done", "stop" if stopped else "length", len(new) + int(stopped and eos is not None)))
