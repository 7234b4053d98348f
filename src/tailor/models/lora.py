"""LoRA through peft: wrap a model, restore adapter weights from a checkpoint, export merged.

The run keeps two artefacts (see train/checkpoint.py): runs/<name>/adapter/ (peft's adapter folder,
small) and runs/<name>/model/ (the adapter merged into the base weights: a plain Hugging Face folder
that loads without peft).
"""

from __future__ import annotations

import copy

import torch

from tailor.config.model import LoraConfig
from tailor.errors import TailorError


def is_lora(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def default_targets(model: torch.nn.Module) -> list[str] | None:
    """peft's own default for known architectures; else the attention query/value projections if named so."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN

    if getattr(model.config, "model_type", None) in KNOWN:
        return None
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for pair in (["q_proj", "v_proj"], ["q", "v"], ["query", "value"], ["c_attn"]):
        if set(pair) <= names:
            return pair
    raise TailorError(f"model.lora.target_modules: peft has no default for model type "
                      f"'{model.config.model_type}'; set it, e.g. [q_proj, v_proj] or ['all-linear'].")


def wrap(model: torch.nn.Module, lora: LoraConfig, kind: str, heads: list[str] | None = None):
    """A peft model with fresh adapters; kind is 'causal', 'seq2seq' or 'classification'."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    task_type = {"causal": TaskType.CAUSAL_LM, "seq2seq": TaskType.SEQ_2_SEQ_LM, "classification": TaskType.SEQ_CLS}[kind]
    targets = lora.target_modules
    target = "all-linear" if targets == ["all-linear"] else (list(targets) if targets else default_targets(model))
    config = PeftLoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target, task_type=task_type,
        modules_to_save=list(heads) if kind == "classification" and heads else None,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise TailorError(f"model.lora: {e}") from None


def load_adapter_state(model, weights: dict[str, torch.Tensor]) -> None:
    """Put adapter (and saved head) weights, as written by `save_pretrained`, back into the peft model."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise TailorError(f"the adapter checkpoint does not match the model (unexpected {unexpected[:3]}).")


def merged_copy(model) -> torch.nn.Module:
    """The base model with the adapters merged in, leaving `model` (still training) untouched."""
    return copy.deepcopy(model).merge_and_unload()
