"""Where the task's data comes from and how it is split into samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tailor.config.base import setting
from tailor.errors import TailorError


@dataclass
class DataConfig:
    source: str = setting(
        "chitchat",
        help="'chitchat' (embedded chitchat-dataset package) or a path to a JSONL file of "
        '{"messages": [{"role": ..., "content": ...}, ...]} conversations (relative paths are from the working directory, normally the project root).',
    )
    history_turns: int = setting(4, help="How many earlier turns (K) form the history of each sample.")
    system_prompt: str | None = setting(
        None, help="System message put before every history; null keeps the chat template's default."
    )
    val_fraction: float = setting(0.05, help="Share of conversations in the validation split.")
    test_fraction: float = setting(0.05, help="Share of conversations in the test split.")
    max_train_samples: int = setting(0, help="Cap on training samples (0 = all); drawn deterministically.")
    max_val_samples: int = setting(200, help="Cap on validation samples used during training (0 = all).")
    max_test_samples: int = setting(300, help="Cap on test samples used by evaluation (0 = all).")
    overlong: Literal["error", "skip"] = setting(
        "error",
        help="A sample still longer than model.max_length after dropping the oldest history turns: "
        "'error' stops with the file and line, 'skip' drops it and counts it.",
    )

    def __post_init__(self) -> None:
        if self.history_turns < 1:
            raise TailorError(f"history_turns must be at least 1, got {self.history_turns}.")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 0.5:
                raise TailorError(f"{name} must be in [0, 0.5), got {value}.")
