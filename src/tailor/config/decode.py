"""Decoding settings, shared by evaluation, `tailor generate`, chat and serving."""

from __future__ import annotations

from dataclasses import dataclass

from tailor.config.base import setting
from tailor.errors import TailorError


@dataclass
class DecodeConfig:
    max_new_tokens: int = setting(64, help="Most tokens generated per reply.")
    do_sample: bool = setting(False, help="Sample (true) or decode greedily / by beam search (false).")
    temperature: float = setting(0.7, help="Softmax temperature when sampling.")
    top_k: int = setting(50, help="Sample among the k most likely tokens (0 = off).")
    top_p: float = setting(0.9, help="Nucleus sampling mass (1.0 = off).")
    num_beams: int = setting(1, help="Beam search width (1 = off).")
    repetition_penalty: float = setting(1.0, help="Penalty on tokens already present (1.0 = off).")
    batch_size: int = setting(8, help="Prompts generated together.")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise TailorError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
        if self.temperature <= 0:
            raise TailorError(f"temperature must be positive, got {self.temperature}.")
