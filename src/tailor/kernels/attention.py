"""Grouped-query attention for teacher-forced passes (training and scoring) on CPU.

PyTorch's CPU kernels for scaled_dot_product_attention are slow at the shapes of small models
(about 150 tokens, head size 64): the flash kernel's backward ran at under 100 GFLOP/s on a
machine with a 945 GFLOP/s bf16 matmul peak, and with a padding mask transformers first copies
each key/value head to every query head of its group (repeat_kv). Here the query heads of a
group are stacked along the rows, so attention is two large batched matmuls against the shared
key/value heads, with no copies, and the softmax runs in fp32 as in transformers' eager path.
It halved the attention time of a SmolLM2 training step (BENCHMARKS.md). Scoring (no gradient)
needs no backward, and there PyTorch's fused forward with `enable_gqa` is the faster one.

For the backward, `Recomputed` keeps the queries, keys and values and computes the probabilities again
(one more query-key product and softmax a layer), as flash attention does, instead of keeping them: they
are the only saved tensor that grows with the square of the length, 18.9 MB a layer at 8 rows of 256
tokens in fp32 (566 MB over SmolLM2-135M's 30 layers, a fifth of what its training step keeps) and four
times that at 512. The recomputed probabilities are the forward's bit for bit (the same ops on the same
tensors), and the backward runs the ops autograd ran.

Keys may be longer than the queries when a shared prefix ran first (`models/prefix.py`): the
queries are then the last positions. Packed rows (`data/packing.py`) come with a block-diagonal causal
mask (B, 1, T, T), bool, which is applied as a padding mask is, so each packed sample attends to itself. Generation keeps transformers' SDPA path: `grouped` is only
switched on around teacher-forced forwards, so decoding gives the tokens `model.generate` gives.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tailor import device as devices

NAME = "tailor_grouped"
# Under autocast the training softmax reads and writes bf16 (the CPU kernel computes in fp32 inside):
# the probabilities equal the fp32 softmax cast to bf16, and forward plus backward take half the time
# of an fp32 softmax with its two casts (6.3 -> 3.1 ms at (8, 9, 226, 250)). The gradient is then
# taken from the bf16 probabilities. False keeps eager attention's fp32 softmax (tests compare both).
BF16_SOFTMAX = True
# Training recomputes the probabilities in the backward (`Recomputed`); False keeps them, as autograd would
# (tests and benchmarks/step_memory.py compare both).
RECOMPUTE = True


def grouped_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, **kwargs):
    """query (B, H, T, D); key, value (B, KV, S, D) with S >= T, the queries being the last T positions;
    attention_mask None or bool (B, 1, T, S), True = attend."""
    batch, heads, length, size = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    # Anything beyond plain causal/padded attention (float masks, logit soft-capping, attention sinks)
    # goes to transformers' own path.
    unusual = kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None
    if (keys < length or heads % kv_heads or unusual
            or (attention_mask is not None and attention_mask.dtype != torch.bool)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    group = heads // kv_heads
    scale = size ** -0.5 if scaling is None else scaling
    if attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        causal = torch.ones(length, keys, dtype=torch.bool, device=query.device).tril(keys - length)
        attention_mask = causal[None, None]
    if not torch.is_grad_enabled():
        # Scoring: PyTorch's fused kernel with the key/value heads shared in place (enable_gqa) never
        # materialises the scores; at scoring shapes it took 0.3-0.6x the time of the two matmuls below.
        return _fused(query, key, value, attention_mask, scale).transpose(1, 2).contiguous(), None
    # Scaling the (T x D) queries costs less than scaling the (T x T) scores.
    scaled = (query * scale).reshape(batch, kv_heads, group * length, size)
    if RECOMPUTE and not (dropout and module.training):
        mask = None if attention_mask is None else attention_mask[:, :, None]
        out = Recomputed.apply(*_autocast(scaled, key, value), mask, group)
        return out.view(batch, heads, length, size).transpose(1, 2).contiguous(), None
    scores = torch.matmul(scaled, key.transpose(-1, -2))
    scores = scores.view(batch, kv_heads, group, length, keys)  # (B, KV, G, T, S)
    if attention_mask is not None:
        # finfo.min, not -inf: a query row with no key to attend (padding) gets a uniform row, not NaN.
        # In place: the matmul's backward needs its inputs, not the scores.
        scores.masked_fill_(~attention_mask[:, :, None], torch.finfo(scores.dtype).min)
    if scores.dtype == torch.bfloat16 and BF16_SOFTMAX:
        probs = torch.softmax(scores, -1)
    else:
        probs = torch.softmax(scores, -1, dtype=torch.float32).to(value.dtype)  # as eager attention
    if dropout and module.training:
        probs = torch.nn.functional.dropout(probs, p=dropout)
    out = torch.matmul(probs.view(batch, kv_heads, group * length, keys), value)  # (B, KV, G*T, D)
    return out.view(batch, heads, length, size).transpose(1, 2).contiguous(), None


def _autocast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors as autocast's matmul would take them: cast to its dtype where it is on (inside `Recomputed`
    autocast is off, so the backward sees the dtypes the forward ran in)."""
    kind = tensors[0].device.type
    if not torch.is_autocast_enabled(kind):
        return tensors
    dtype = torch.get_autocast_dtype(kind)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)


def _probabilities(query, key_t, mask, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities in the inputs' dtype, the softmax's own output), (B, KV, G, T, S), from the folded
    grouped queries (B*KV, G*T, D) and transposed keys (B*KV, D, S): the ops `grouped_attention` ran before
    `Recomputed`, in the same order."""
    scores = query.bmm(key_t).view(shape)
    if mask is not None:
        scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)  # finfo.min: see grouped_attention
    if scores.dtype == torch.bfloat16 and BF16_SOFTMAX:
        probs = torch.softmax(scores, -1)
        return probs, probs
    softmax = torch.softmax(scores, -1, dtype=torch.float32)
    return softmax.to(query.dtype), softmax


class Recomputed(torch.autograd.Function):
    """softmax(q k^T) v over grouped heads, keeping q, k and v for the backward and not the probabilities
    (module docstring). query (B, KV, G*T, D), already scaled; key, value (B, KV, S, D), all of one dtype;
    mask None or bool, broadcastable to (B, KV, G, T, S), True = attend. Returns (B, KV, G*T, D).

    The products are folded to three dimensions as torch.matmul folds them (a copy where a view cannot do),
    and the backward runs bmm's own backward formulas on those tensors, so that every product sees the
    memory layout it saw without recomputation: the same layouts give the same sums, bit for bit."""

    @staticmethod
    def forward(ctx, query, key, value, mask, group: int):
        batch, kv_heads, rows, size = query.shape
        keys = key.shape[2]
        query = query.reshape(batch * kv_heads, rows, size)
        key_t = key.transpose(-1, -2).reshape(batch * kv_heads, size, keys)
        value = value.reshape(batch * kv_heads, keys, size)
        ctx.shape = (batch, kv_heads, group, rows // group, keys)
        with torch.autocast(query.device.type, enabled=False):
            probs, _ = _probabilities(query, key_t, mask, ctx.shape)
            out = probs.view(batch * kv_heads, rows, keys).bmm(value)
        ctx.save_for_backward(query, key_t, value, mask)
        return out.view(batch, kv_heads, rows, size)

    @staticmethod
    def backward(ctx, grad):
        query, key_t, value, mask = ctx.saved_tensors
        need_query, need_key, need_value = ctx.needs_input_grad[:3]
        batch, kv_heads, _, _, keys = ctx.shape
        probs, softmax = _probabilities(query, key_t, mask, ctx.shape)
        flat = probs.view(query.shape[0], query.shape[1], keys)
        grad = grad.reshape(query.shape)
        grad_query = grad_key = grad_value = None
        if need_value:
            grad_value = flat.transpose(1, 2).bmm(grad).view(batch, kv_heads, keys, -1)
        if need_query or need_key:
            grad_probs = grad.bmm(value.transpose(1, 2)).view(probs.shape).to(softmax.dtype)
            # softmax(..., dtype=float32) is a cast then a softmax: its backward, then the cast's.
            grad_scores = torch._softmax_backward_data(grad_probs, softmax, -1, softmax.dtype).to(probs.dtype)
            if mask is not None:
                grad_scores.masked_fill_(~mask, 0)
            grad_scores = grad_scores.view(flat.shape)
            if need_query:
                grad_query = grad_scores.bmm(key_t.transpose(1, 2)).view(batch, kv_heads, *query.shape[1:])
            if need_key:
                grad_key = query.transpose(1, 2).bmm(grad_scores).view(batch, kv_heads, -1, keys).transpose(-1, -2)
        return grad_query, grad_key, grad_value, None, None


_additive: tuple = (None, None)  # (bool mask, its additive form): every layer of a forward gets the same mask


def _fused(query, key, value, mask, scale):
    """SDPA over grouped heads, the mask made additive once per forward. finfo.min rather than -inf, so a
    row with no key to attend (padding) averages the values instead of giving NaN that would reach the
    real rows through the next layer's keys."""
    global _additive
    if mask is not None:
        cached = _additive  # read once: another thread may score at the same time
        if cached[0] is not mask:
            cached = (mask, torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
                      .masked_fill_(~mask, torch.finfo(query.dtype).min))
            _additive = cached
        mask = cached[1]
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale,
                                                            enable_gqa=True)


AttentionInterface.register(NAME, grouped_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


@contextlib.contextmanager
def grouped(model):
    """Route a decoder's self-attention through `grouped_attention` for the forwards inside the block.

    A CPU path: on a GPU, SDPA's own kernels are the fast ones. Not with gradient checkpointing either, whose
    recomputation in the backward pass runs outside this block and must see the attention the forward saw."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    checkpointing = model.training and getattr(model, "is_activation_checkpointing", False)
    if (before != "sdpa" or getattr(config, "is_encoder_decoder", False) or checkpointing
            or not devices.is_cpu(devices.of(model))):
        yield  # eager, flex or encoder-decoder models keep what they were loaded with
        return
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
