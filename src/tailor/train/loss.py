"""Cross-entropy on supervised positions only.

The backbone runs on the whole batch, but the LM head and the softmax run only where a label
exists (the response tokens), in chunks, so full-vocabulary logits for the prompt never exist.

A batch of packed rows (data/packing.py: several samples a row, `position_ids` restarting at each) runs
with a block-diagonal causal mask, so each sample attends only to itself: its loss and gradients are the
unpacked ones.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from tailor.data.packing import block_causal
from tailor.data.tokenize import IGNORE
from tailor.errors import TailorError
from tailor.kernels import argmax
from tailor.kernels.attention import grouped
from tailor.kernels.head import head_logits
from tailor.models.prefix import hidden_states
from tailor.train.cross_entropy import summed_cross_entropy

CHUNK = 1024  # supervised positions per head+softmax chunk: bounds logits memory to CHUNK x vocab


def backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrapper
    return getattr(inner, inner.base_model_prefix), inner.get_output_embeddings()


def packed_mask(backbone: torch.nn.Module, position_ids: torch.Tensor) -> torch.Tensor | None:
    """The block-diagonal causal mask of packed rows (B, 1, T, T), in the form the attention in use reads:
    bool for SDPA and tailor's grouped attention, additive for eager attention. Flash and flex attention get
    None: transformers finds the samples from the restarting position ids itself (variable-length kernels)."""
    config = backbone.config
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation.startswith("flash") or implementation == "flex_attention":
        return None
    window = getattr(config, "sliding_window", None)
    if window and int(position_ids.max()) >= window:
        raise TailorError(f"data.packing: a packed sample is longer than the model's sliding attention window "
                          f"({window} tokens), which one mask for every layer cannot express; set data.packing "
                          "false.")
    mask = block_causal(position_ids)
    if implementation != "eager":
        return mask
    dtype = backbone.get_input_embeddings().weight.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def token_stats(model: PreTrainedModel, batch: dict[str, torch.Tensor],
                known_prefixes: dict | None = None) -> tuple[torch.Tensor, int, int]:
    """(summed NLL over supervised tokens, number of them, how many the argmax got right).

    `known_prefixes` (scoring only) keeps shared prefixes' results across batches (models/prefix.py)."""
    backbone, head = backbone_and_head(model)
    with grouped(backbone):
        if "position_ids" in batch:  # packed rows: each sample attends to itself only
            hidden = backbone(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                              attention_mask=packed_mask(backbone, batch["position_ids"])).last_hidden_state
        else:
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
        correct += int((argmax(logits.detach()) == y[start : start + CHUNK]).sum())
        # In fp32 from bf16 logits, without fp32 copies of the whole chunk; the head gets a bf16 gradient, written
        # over these logits, which nothing reads after the argmax above.
        total = total + summed_cross_entropy(logits, y[start : start + CHUNK], overwrite=True)
    return total, int(y.numel()), correct
