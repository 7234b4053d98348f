"""Decoding for Llama-family decoders without the per-step machinery, and lookahead.

At batch 1 to 8 a decoding step on CPU is bound by reading the weights. This path cuts the work
around the matrix products: the query/key/value and gate/up projections run as one product each
(bit for bit the separate ones), queries and keys rotate together, keys and values go into a
preallocated cache (no concatenation per step), and no mask or cache object is rebuilt per step.
Each operation is otherwise the one transformers' Llama forward runs, with the shapes it has for a
single token (its norm, rotary and activation modules are called as they are; SDPA gets the heads
grouped or packed as transformers gives them), so greedy replies equal `model.generate`'s.

The products run on `kernels.Product` (weights packed once, oneDNN's rounding); on bf16 the norms'
elementwise tail, the rotary embedding with the cache writes, and greedy's argmax run as single
kernel passes that round each step as the torch op they stand for. The prompt runs with the
arithmetic of the model's forward, its products on the real tokens only (`Lean.prefill`).

Lookahead (`draft` > 0, greedy at batch 1; `decoder.Decoder` runs it) drafts the next tokens by looking up the row's latest
n-gram earlier in its own text (prompt lookup) and checks the draft in one forward; a row keeps the
draft up to its first token that differs from the model's argmax, plus that argmax. Those are the
one-token-at-a-time tokens as long as every check rounds as the one-token step would: oneDNN rounds
a several-row bf16 product apart from a one-row one (K blocks of 1024 instead of 512), so the check
runs the kernel with the one-row blocks, and attention one query at a time. Where the kernel cannot
do that for every product (`drafts_exact`), bf16 decoding does not draft.

On a CPU without native bf16 (e.g. AVX-512 without AVX512-BF16), bf16 weights decode with fp32 activations
(`activations`): every product widens the bf16 weight (in registers with AVX-512, `kernels.Product` and
widen.cpp; else, or with the kernels off, by F.linear on the widened weight), and the norms, rotary
embedding (one pass each: norm.cpp, rotary.cpp), attention and cache run in fp32, as llama.cpp runs f16 weights. The replies are
then those of the model's fp32 forward on the bf16 weights (`model.float()`), up to fp32 rounding: the
kernel sums in its own order. Its rows do not depend on each other, so lookahead drafts there.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from tailor import device as devices
from tailor.kernels import Product, available, avx512_available, rms_norm

NGRAM = 3  # the longest n-gram looked up; shorter ones are tried after it


def supports(model) -> bool:
    """A plain Llama-family decoder on SDPA attention (the kernel this loop calls, so the tokens match
    `generate`'s): every projection a bare nn.Linear without bias (no adapters)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llama" or getattr(config, "hidden_act", None) != "silu":
        return False
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return False
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or type(getattr(model, "lm_head", None)) is not torch.nn.Linear:
        return False
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    return all(type(getattr(layer.self_attn, n, None)) is torch.nn.Linear for layer in layers for n in names) and all(
        type(getattr(layer.mlp, n, None)) is torch.nn.Linear for layer in layers for n in ("gate_proj", "up_proj", "down_proj"))


def activations(model) -> torch.dtype:
    """The dtype decoding computes in: the weights' own, but fp32 for bf16 weights on a CPU whose bf16 is
    emulated (module docstring)."""
    dtype = model.lm_head.weight.dtype
    if dtype == torch.bfloat16 and model.lm_head.weight.is_cpu and not devices.cpu_has_bf16():
        return torch.float32
    return dtype


def lookup(context: list[int], most: int) -> list[int]:
    """Up to `most` tokens that followed the latest earlier occurrence of the context's last n-gram.

    >>> lookup([5, 6, 7, 9, 5, 6], 2)
    [7, 9]
    >>> lookup([1, 2, 3], 2)
    []
    """
    for n in range(min(NGRAM, len(context) - 1), 0, -1):
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == tail:
                return context[start + n:start + n + most]
    return []


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded prompts, as `generate` makes them: 0.. on real tokens, 0 on padding."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, P)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


_FUSED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def fused_layers(model) -> list[tuple]:
    """Per layer: (norm, q|k|v product, o product, norm, gate|up product, down product), then the LM
    head's product; kept per model while its weights are unchanged (chat and batched replies decode
    many times with one model, and packing the weights for `kernels.Product` reads them all)."""
    inner = model.model
    weights = [p for layer in inner.layers for p in (layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
               layer.self_attn.v_proj.weight, layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight,
               layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight)] + [model.lm_head.weight]
    # Inference tensors keep no version counter, so their fusion is not kept.
    stamp = None if any(w.is_inference() for w in weights) else tuple((w.data_ptr(), w._version) for w in weights)
    kept = _FUSED.get(model)
    if stamp is not None and kept is not None and kept[0] == stamp:
        return kept[1]
    layers = []
    for layer in inner.layers:
        att, mlp = layer.self_attn, layer.mlp
        layers.append((
            layer.input_layernorm,
            Product(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).detach()),
            Product(att.o_proj.weight.detach()),
            layer.post_attention_layernorm,
            Product(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()),
            Product(mlp.down_proj.weight.detach()),
        ))
    layers.append(Product(model.lm_head.weight.detach()))
    if stamp is not None:
        _FUSED[model] = (stamp, layers)
    return layers


class Lean:
    """The decoder's weights arranged for decoding, and its key/value cache."""

    def __init__(self, model, batch: int, length: int):
        config, inner = model.config, model.model
        self.model = model
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        *self.layers, self.head = fused_layers(model)
        self.scaling = [layer.self_attn.scaling for layer in inner.layers]
        self.dtype = activations(model)
        self.widening = self.dtype == torch.float32 and model.lm_head.weight.dtype == torch.bfloat16
        shape = (batch, self.kv_heads, length, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=self.dtype) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=self.dtype) for _ in self.layers]

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after left-padded prompts (B, T); their keys and values go into the cache.

        The arithmetic of the model's own forward, with one saving: products, norms and the MLP run
        on the real tokens alone (a row of a product rounds the same whatever other rows it has, from
        two rows on), while attention runs on the padded layout with the call transformers makes. Padded
        positions carry zeros instead of the pad token's states; attention masks them out exactly.
        """
        batch, width = ids.shape
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        inner = self.model.model
        real = mask.bool()
        position_ids = positions(mask)
        embeds = inner.embed_tokens(ids).to(self.dtype)  # (B, T, H)
        causal = create_causal_mask(config=self.model.config, inputs_embeds=embeds, attention_mask=mask,
                                    past_key_values=DynamicCache(config=self.model.config), position_ids=position_ids)
        cos, sin = inner.rotary_emb(embeds, position_ids)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
        x = embeds[real]  # (N, H): the real tokens
        padded = embeds.new_zeros(batch, width, (heads + 2 * kv_heads) * dim)
        interface = ALL_ATTENTION_FUNCTIONS["sdpa"]
        for i, (norm1, qkv, out, norm2, gate_up, down) in enumerate(self.layers):
            padded[real] = qkv(rms_norm(norm1, x))
            turned, value = padded.split([(heads + kv_heads) * dim, kv_heads * dim], dim=-1)
            turned = turned.view(batch, width, heads + kv_heads, dim).transpose(1, 2)
            turned = turned * cos + rotate_half(turned) * sin
            query, key = turned[:, :heads], turned[:, heads:]
            value = value.view(batch, width, kv_heads, dim).transpose(1, 2)
            self.keys[i][:, :, :width] = key
            self.values[i][:, :, :width] = value
            att, _ = interface(inner.layers[i].self_attn, query, key, value, causal, dropout=0.0,
                               scaling=self.scaling[i])  # (B, T, heads, D)
            x = x + out(att.reshape(batch, width, heads * dim)[real])
            gate, up = gate_up(rms_norm(norm2, x)).chunk(2, dim=-1)
            x = x + down(F.silu(gate) * up)
        last = real.sum(-1).cumsum(0) - 1  # each row's last real token (left padding: the prompt's end)
        return self.head(rms_norm(inner.norm, x[last]))

    def attend(self, i: int, query: torch.Tensor, first: int, allowed: torch.Tensor | None) -> torch.Tensor:
        """Attention of queries (B, H, q, D) over layer i's cache, each query called as decoding calls it.

        SDPA's CPU kernel rounds a row differently depending on how many query rows it gets and on
        how the heads are grouped, so every call has the shapes transformers gives a single token.
        Without padding (`allowed` None, every row's queries at slots first, first + 1, ...): the
        heads grouped by SDPA, no mask, one call per query. With padding (q == 1 then): the additive
        key mask `allowed` (B, width) and the query heads packed onto their key/value head.
        """
        batch, heads, q, dim = query.shape
        keys, values = self.keys[i], self.values[i]
        if allowed is None:
            return torch.cat([F.scaled_dot_product_attention(query[:, :, j:j + 1], keys[:, :, :first + j + 1],
                                                             values[:, :, :first + j + 1], scale=self.scaling[i],
                                                             enable_gqa=True) for j in range(q)], dim=2)
        width = allowed.shape[1]
        packed = query.reshape(batch, self.kv_heads, heads // self.kv_heads, dim)
        att = F.scaled_dot_product_attention(packed, keys[:, :, :width], values[:, :, :width],
                                             attn_mask=allowed[:, None, None], scale=self.scaling[i])
        return att.reshape(batch, heads, 1, dim)

    def forward(self, ids: torch.Tensor, start: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Logits (B, q, V) of new tokens `ids` (B, q); row b's go into cache slots start[b]...

        Row b attends to its slots pad[b] .. start[b] + j (left padding before pad[b]). More than
        one token per row only at batch 1 (no padding, every row at the same slot).
        """
        batch, q = ids.shape
        if q > 1 and batch > 1:
            raise ValueError("lean decoding checks drafts at batch 1 only")
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        slots = start[:, None] + torch.arange(q)  # (B, q)
        rows = torch.arange(batch)[:, None].expand(batch, q)
        same_slot = bool((start == start[0]).all())
        first = int(start[0])
        allowed = None  # no padding and every row at one slot: no mask
        if not (same_slot and bool((pad == 0).all())):
            keys_at = torch.arange(int(start.max()) + 1)
            seen = (keys_at >= pad[:, None]) & (keys_at <= start[:, None])  # (B, width)
            # As an additive mask in the queries' dtype, which is what SDPA turns a bool mask into on each call.
            allowed = torch.zeros(seen.shape, dtype=self.keys[0].dtype).masked_fill_(~seen, float("-inf"))
        inner = self.model.model
        by_row = q > 1  # drafted tokens: each rounded as the one-token step that would make it
        x = inner.embed_tokens(ids).to(self.dtype)
        cos, sin = (t.contiguous() for t in inner.rotary_emb(x, slots - pad[:, None]))  # (B, q, D)
        if x.dtype == cos.dtype == torch.bfloat16 and available():  # the kernel's rotary pass applies
            fused = torch.ops.tailor_kernels.rotary_bf16
        elif self.widening and avx512_available():  # its fp32 twin, where bf16 weights decode in fp32
            fused = torch.ops.tailor_kernels.rotary_f32
        else:
            fused = None
        for i, (norm1, qkv, out, norm2, gate_up, down) in enumerate(self.layers):
            h = qkv(rms_norm(norm1, x), by_row)
            if fused is not None:  # the kernel turns queries and keys and fills the caches in one pass, as below
                query = fused(h, cos, sin, self.keys[i], self.values[i], slots, heads, kv_heads)
            else:
                # Queries and keys rotate together: one set of elementwise ops for both.
                turned, value = h.split([(heads + kv_heads) * dim, kv_heads * dim], dim=-1)
                turned = turned.view(batch, q, heads + kv_heads, dim).transpose(1, 2)
                turned = turned * cos[:, None] + rotate_half(turned) * sin[:, None]
                query, key = turned[:, :heads], turned[:, heads:]
                value = value.view(batch, q, kv_heads, dim).transpose(1, 2)
                if same_slot:
                    self.keys[i][:, :, first:first + q] = key
                    self.values[i][:, :, first:first + q] = value
                else:
                    self.keys[i][rows, :, slots] = key.transpose(1, 2)
                    self.values[i][rows, :, slots] = value.transpose(1, 2)
            att = self.attend(i, query, first, allowed).transpose(1, 2).reshape(batch, q, heads * dim)
            x = x + out(att, by_row)
            gate, up = gate_up(rms_norm(norm2, x), by_row).chunk(2, dim=-1)
            x = x + down(F.silu(gate) * up, by_row)
        return self.head(rms_norm(inner.norm, x), by_row)


def drafts_exact(model) -> bool:
    """Whether checking drafted tokens gives one-token steps' tokens: fp32 weights (their products measured
    row for row the same) or fp32 activations on bf16 weights (the widening kernel's rows are independent),
    or bf16 ones whose every product the kernel rounds row by row."""
    *layers, head = fused_layers(model)
    if activations(model) == torch.float32:
        return True
    return head.exact_by_row() and all(p.exact_by_row() for layer in layers for p in layer if isinstance(p, Product))
