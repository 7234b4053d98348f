"""train.optimizer adamw_8bit / adamw_4bit: AdamW with its moments quantized, from torchao.

torchao's AdamW8bit / AdamW4bit (the ones the HF Trainer offers as adamw_torch_8bit / 4bit) keep each
moment of a tensor of 4,096 values or more as 8- or 4-bit codes with one scale per block of 256 values;
smaller tensors (norms, biases) keep fp32 moments. The update is a torch.compile'd function per tensor
shape, so the first step compiles (tens of seconds on a CPU) and later steps reuse it. It needs no GPU.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import torch

from tailor.errors import TailorError

BLOCK = 256  # values per quantization block: torchao's and the HF Trainer's default
FOLDER = Path(sys.prefix) / "lowbit"  # the Makefile's pip install --target


# At the first step torch warns that torchao's state tensors lack a cache hash: nothing for the user to act on
# (tailor/quiet.py drops what torchao's import logs).
warnings.filterwarnings("ignore", message=".*does not implement _stable_hash_for_caching.*")


def optimizer_class(kind: str):
    """torchao's optimizer class for train.optimizer `kind`: from site-packages ('tailor[lowbit]'), else from
    the folder `make install` keeps it in beside site-packages (FOLDER), where transformers does not see it and
    so does not import it at every model load."""
    try:
        from torchao.optim import AdamW4bit, AdamW8bit
    except ImportError as e:
        if not FOLDER.is_dir() or str(FOLDER) in sys.path:
            raise TailorError(f"train.optimizer {kind} needs torchao: pip install 'tailor[lowbit]' ({e}).") from e
        sys.path.append(str(FOLDER))
        return optimizer_class(kind)
    return {"adamw_8bit": AdamW8bit, "adamw_4bit": AdamW4bit}[kind]


def available() -> bool:
    """Whether optimizer_class would find torchao, without importing it."""
    return importlib.util.find_spec("torchao") is not None or (FOLDER / "torchao").is_dir()


def make(kind: str, groups: list[dict], lr: float, betas: list[float]) -> torch.optim.Optimizer:
    return optimizer_class(kind)(groups, lr=lr, betas=tuple(betas), block_size=BLOCK)
