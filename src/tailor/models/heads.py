"""A classification head on a pretrained model (AutoModelForSequenceClassification).

Loading a causal LM folder this way keeps its body and adds a new, randomly initialised linear head
(`score` for Llama-family models) with one output per label; the label names go into the config
(id2label), so the saved folder is a plain Hugging Face classifier.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from tailor import device as devices
from tailor.errors import TailorError


def load_classifier(source: str, label_names: list[str] | None, pad_token_id: int | None, dtype: str = "float32",
                    seed: int = 0, quantize: str = "none") -> PreTrainedModel:
    """With label_names: a (possibly new) head of that many classes; None: the folder's own head.
    On this process's device (tailor.device)."""
    from tailor.models.quantize import from_pretrained_kwargs

    kw = from_pretrained_kwargs(quantize)
    quantized = bool(kw)
    if label_names is not None:
        kw |= dict(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                  label2id={name: i for i, name in enumerate(label_names)})
    torch.manual_seed(seed)  # the new head's initialisation
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, dtype=getattr(torch, dtype),
                                                                   use_safetensors=True, **kw)
    except (OSError, ValueError) as e:
        raise TailorError(f"could not load model '{source}' with a classification head: {e}") from None
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id  # the head pools the last non-padding token
    return model if quantized else devices.place(model)


def label_names_of(model: PreTrainedModel) -> list[str]:
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(len(id2label))]
