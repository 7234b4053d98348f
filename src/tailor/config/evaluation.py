"""Settings of evaluation and the base-vs-fine-tuned comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tailor.config.base import setting


@dataclass
class EvalConfig:
    metric: str = setting("loss", help="Validation metric that picks the best checkpoint and drives early stopping.")
    mode: Literal["min", "max"] = setting("min", help="Whether lower ('min') or higher ('max') values of eval.metric are better.")
    batch_size: int = setting(16, help="Samples per forward pass when scoring.")
    generate_samples: int = setting(32, help="Test prompts answered by generation for length and stop rate.")
    show_samples: int = setting(3, help="Test prompts whose replies are printed side by side.")
