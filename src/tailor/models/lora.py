"""LoRA through peft: wrap a model, restore adapter weights from a checkpoint, export merged.

The run keeps two artefacts (see train/checkpoint.py): runs/<name>/adapter/ (peft's adapter folder,
small) and runs/<name>/model/ (the adapter merged into the base weights: a plain Hugging Face folder
that loads without peft).
"""

from __future__ import annotations

import copy
import warnings

import torch

from tailor.config.model import LoraConfig
from tailor.errors import TailorError


def is_lora(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


# Each family's attention projections that get adapters by default (the query and value projections, as
# in the LoRA paper; fused families adapt their one fused projection).
FAMILY_TARGETS = {
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"], "gemma2": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "bert": ["query", "value"], "roberta": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
    "t5": ["q", "v"], "bart": ["q_proj", "v_proj"], "marian": ["q_proj", "v_proj"],
}
# Other families: the first of these pairs whose names the model has.
FALLBACK_TARGETS = (["q_proj", "v_proj"], ["q", "v"], ["query", "value"], ["q_lin", "v_lin"], ["c_attn"], ["qkv_proj"])


def adaptable_names(model: torch.nn.Module) -> list[str]:
    """The last name of every layer LoRA can adapt (linear layers, and GPT-2's Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, Conv1D, torch.nn.Embedding)
    return sorted({n.split(".")[-1] for n, m in model.named_modules() if n and isinstance(m, kinds)})


def default_targets(model: torch.nn.Module) -> list[str]:
    """The family's own targets, else the first query/value pair the model names."""
    family = getattr(model.config, "model_type", None)
    if family in FAMILY_TARGETS:
        return list(FAMILY_TARGETS[family])
    names = set(adaptable_names(model))
    for pair in FALLBACK_TARGETS:
        if set(pair) <= names:
            return pair
    raise TailorError(f"model.lora.target_modules: tailor has no default for model type '{family}'; set it, "
                      f"e.g. ['all-linear'] or some of the layers this model has: {', '.join(adaptable_names(model))}.")


def check_targets(model: torch.nn.Module, targets: list[str]) -> None:
    """Every name in an explicit model.lora.target_modules must match a layer of the model, as peft matches
    them: a module's whole name, or its last dotted parts (`q_proj`, `self_attn.q_proj`)."""
    modules = [n for n, _ in model.named_modules() if n]
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in modules)]
    if unknown:
        names = adaptable_names(model)
        raise TailorError(f"model.lora.target_modules: {', '.join(unknown)} matches no layer of this "
                          f"{getattr(model.config, 'model_type', type(model).__name__)} model; its layers are: "
                          f"{', '.join(names)}.")


def wrap(model: torch.nn.Module, lora: LoraConfig, kind: str, heads: list[str] | None = None,
         new_tokens: list[int] | None = None):
    """A peft model with fresh adapters; kind is 'causal', 'seq2seq' or 'classification'. `new_tokens`: ids
    added to the vocabulary (data.chat_format chatml), whose embedding rows train beside the adapters."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    task_type = {"causal": TaskType.CAUSAL_LM, "seq2seq": TaskType.SEQ_2_SEQ_LM, "classification": TaskType.SEQ_CLS}[kind]
    targets = lora.target_modules
    if targets and targets != ["all-linear"]:
        check_targets(model, targets)
    target = "all-linear" if targets == ["all-linear"] else (list(targets) if targets else default_targets(model))
    from transformers.pytorch_utils import Conv1D

    # GPT-2's Conv1D stores its weight transposed (in x out): peft must be told, or it warns and guesses.
    transposed = any(isinstance(m, Conv1D) and (target == "all-linear" or n.split(".")[-1] in target)
                     for n, m in model.named_modules())
    config = PeftLoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target, task_type=task_type,
        fan_in_fan_out=transposed,
        modules_to_save=list(heads) if kind == "classification" and heads else None,
        trainable_token_indices=list(new_tokens) if new_tokens else None,
    )
    try:
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for users to do
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
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
