"""Run a decoder once over the token prefix every row of a batch shares.

Chat data repeats itself at the start of every sample: the chat template's system prompt is 24 of
the 125 tokens of an average SmolLM2 chitchat sample. Under causal attention a position's hidden
state depends only on the tokens before it, so the shared prefix gives every row the same hidden
states and keys/values. Here the prefix runs once (batch 1), its keys/values are repeated for the
rows, and the rest of each row runs against them. The result is the plain forward's, up to
rounding; gradients flow back through both passes, and the repeat sums the rows' gradients
into the one prefix pass.

Not used when dropout is active (the rows would share one dropout mask on the prefix), when training
with gradient checkpointing (no cache then), for encoder-decoder models, when the prefix is too short
to pay for a second pass, or off the CPU. A GPU running a model of this size waits on the host, which
launches its kernels one by one: on an H200, a SmolLM2-135M training step of 8 x 128 tokens took 108 ms
of wall time for 17 ms of GPU work (4,682 kernels). The second pass saves FLOPs the GPU has to spare
and doubles the operations the host dispatches (18,406 against 8,766 for a forward and backward of 8
chitchat samples: benchmarks/dispatch_count.py), so there the batch runs whole, as the Hugging Face model runs it.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from tailor import device as devices

MIN_SHARED = 16  # a shorter common prefix saves less than the second pass costs at small batch sizes


def shared_length(batch: dict[str, torch.Tensor]) -> int:
    """How many leading tokens every row shares, all of them real (not padding); each row keeps one of its own.

    >>> ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 9], [5, 6, 2, 2]])
    >>> shared_length({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])})
    2
    >>> shared_length({"input_ids": ids[:2]})
    3
    """
    ids = batch["input_ids"]
    same = (ids == ids[:1]).all(0)
    mask = batch.get("attention_mask")
    if mask is not None:
        same &= mask.bool().all(0)
    return min(int(same.int().cumprod(0).sum()), ids.shape[1] - 1)


def dropout_active(model: torch.nn.Module) -> bool:
    if not model.training:
        return False
    if float(getattr(model.config, "attention_dropout", 0.0) or 0.0) > 0:
        return True
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def worth_sharing(backbone: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """The shared prefix length to run once, or 0 to run the batch as it is."""
    config = getattr(backbone, "config", None)
    if (batch["input_ids"].shape[0] < 2 or config is None or getattr(config, "is_encoder_decoder", False)
            or not devices.is_cpu(batch["input_ids"].device)):
        return 0
    length = shared_length(batch)
    if length < MIN_SHARED or dropout_active(backbone) or checkpointing(backbone):
        return 0
    return length


def checkpointing(backbone: torch.nn.Module) -> bool:
    """Training with gradient checkpointing (train.gradient_checkpointing): transformers then turns the cache
    off, so the prefix's keys/values would never be kept for the rows."""
    if not backbone.training:
        return False
    # transformers 5 renamed the property and warns at every read of the old name (each training batch)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(backbone, name):
            return bool(getattr(backbone, name))
    return False


def run_prefix(backbone: torch.nn.Module, ids: torch.Tensor, known: dict | None):
    """(hidden states (1, P, H), [(keys, values) per layer]) of the prefix `ids` (1, P).

    `known` keeps them across batches when the weights cannot change in between (scoring)."""
    key = tuple(ids[0].tolist())
    if known is not None and key in known:
        return known[key]
    cache = DynamicCache(config=backbone.config)
    head = backbone(input_ids=ids, past_key_values=cache, use_cache=True).last_hidden_state
    result = head, [(layer.keys, layer.values) for layer in cache.layers]
    if known is not None:
        known[key] = result
    return result


def hidden_states(backbone: torch.nn.Module, batch: dict[str, torch.Tensor], known: dict | None = None) -> torch.Tensor:
    """The backbone's last hidden states (B, T, H) for `batch`, with the shared prefix run once.

    `known`, a dict the caller keeps, reuses a prefix's result in later batches: only for passes
    without gradients, over weights that do not change between them."""
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    shared = worth_sharing(backbone, batch)
    if not shared:
        return backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    if known is not None and torch.is_grad_enabled():
        raise ValueError("a prefix kept across batches would carry a stale graph: use it without gradients")
    rows, length = ids.shape
    head, layers = run_prefix(backbone, ids[:1, :shared], known)
    cache = DynamicCache(config=backbone.config)
    for index, (keys, values) in enumerate(layers):
        # Each layer concatenates the rows' own keys/values to these.
        cache.update(keys.repeat_interleave(rows, 0), values.repeat_interleave(rows, 0), index)
    positions = torch.arange(shared, length, device=ids.device).expand(rows, -1)
    tail = backbone(input_ids=ids[:, shared:], attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True).last_hidden_state
    return torch.cat([head.expand(rows, -1, -1), tail], dim=1)
