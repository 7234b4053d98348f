"""QLoRA's quantized base weights (model.quantize: 4bit / 8bit) through bitsandbytes, on CUDA only.

bitsandbytes' kernels run on NVIDIA GPUs; everywhere else the setting stops the run before anything
is loaded, naming the setting. The quantized weights are frozen; LoRA adapters (model.lora) train on top.
"""

from __future__ import annotations

import torch

from tailor import device as devices
from tailor.errors import TailorError


def from_pretrained_kwargs(quantize: str) -> dict:
    """Extra `from_pretrained` arguments: none for 'none', else a BitsAndBytesConfig loaded onto this GPU."""
    if quantize == "none":
        return {}
    here = devices.current()
    if here.type != devices.CUDA:
        raise TailorError(f"model.quantize '{quantize}' (QLoRA through bitsandbytes) needs a CUDA GPU; this run's "
                          f"device is {here}. Set model.quantize=none, or run on a GPU.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TailorError(f"model.quantize '{quantize}' needs the bitsandbytes package: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=devices.half_dtype("auto", here) or torch.float32)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "device_map": {"": here}}


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_training(model, gradient_checkpointing: bool):
    """peft's preparation of a quantized model for adapters (norms in fp32, input gradients on)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
