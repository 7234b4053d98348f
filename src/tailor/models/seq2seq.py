"""Encoder-decoder models (T5, Marian, BART, ...) through AutoModelForSeq2SeqLM."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, PreTrainedModel

from tailor import device as devices
from tailor.errors import TailorError


def is_encoder_decoder(source: str) -> bool:
    try:
        return bool(getattr(AutoConfig.from_pretrained(source), "is_encoder_decoder", False))
    except (OSError, ValueError) as e:
        raise TailorError(f"could not read the config of model '{source}': {e}") from None


def load_seq2seq(source: str, dtype: str = "float32", quantize: str = "none") -> PreTrainedModel:
    """The encoder-decoder model, on this process's device (tailor.device)."""
    from tailor.models.quantize import from_pretrained_kwargs

    extra = from_pretrained_kwargs(quantize)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=getattr(torch, dtype), use_safetensors=True, **extra)
        return model if extra else devices.place(model)
    except (OSError, ValueError) as e:
        raise TailorError(f"could not load encoder-decoder model '{source}': {e}") from None
