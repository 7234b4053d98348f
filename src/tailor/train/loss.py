"""Cross-entropy on supervised positions only.

The backbone runs on the whole batch, but the LM head and the softmax run only where a label
exists (the response tokens), in chunks, so full-vocabulary logits for the prompt never exist.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from tailor.data.tokenize import IGNORE
from tailor.kernels import argmax
from tailor.kernels.attention import grouped
from tailor.kernels.head import head_logits
from tailor.models.prefix import hidden_states

CHUNK = 1024  # supervised positions per head+softmax chunk: bounds logits memory to CHUNK x vocab


def backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrapper
    return getattr(inner, inner.base_model_prefix), inner.get_output_embeddings()


def token_stats(model: PreTrainedModel, batch: dict[str, torch.Tensor],
                known_prefixes: dict | None = None) -> tuple[torch.Tensor, int, int]:
    """(summed NLL over supervised tokens, number of them, how many the argmax got right).

    `known_prefixes` (scoring only) keeps shared prefixes' results across batches (models/prefix.py)."""
    backbone, head = backbone_and_head(model)
    with grouped(backbone):
        hidden = hidden_states(backbone, batch, known_prefixes)  # (B, T, H); a prefix all rows share runs once
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    keep = targets != IGNORE  # (B, T-1)
    h = hidden[:, :-1][keep]  # (N, H)
    y = targets[keep]  # (N,)
    total = hidden.new_zeros((), dtype=torch.float32)
    correct = 0
    cap = getattr(backbone.config, "final_logit_softcapping", None)  # Gemma 2: the model's forward caps its logits
    for start in range(0, y.numel(), CHUNK):
        logits = head_logits(head, h[start : start + CHUNK])  # (n, V), bf16 under autocast
        if cap:
            logits = torch.tanh(logits / cap) * cap
        # The log-softmax reads bf16 logits and computes in fp32, as a cast first would, without the fp32 copy;
        # its backward hands the head a bf16 gradient, as the cast's backward did.
        logprobs = F.log_softmax(logits, -1, dtype=torch.float32)
        total = total + F.nll_loss(logprobs, y[start : start + CHUNK], reduction="sum")
        correct += int((argmax(logits.detach()) == y[start : start + CHUNK]).sum())
    return total, int(y.numel()), correct
