"""The grouped attention used for training and scoring equals transformers' SDPA attention."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tailor.kernels.attention import NAME, grouped
from tailor.train.loss import token_stats

from saved import saved_bytes


def batch_of(padded: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, 500, (3, 12))
    labels = ids.clone()
    labels[:, :4] = -100
    batch = {"input_ids": ids, "labels": labels}
    if padded:  # right padding, as tailor's collate makes it
        mask = torch.ones_like(ids)
        mask[1, 9:] = 0
        mask[2, 6:] = 0
        batch["attention_mask"] = mask
        batch["labels"] = labels.masked_fill(mask == 0, -100)
    return batch


def loss_and_grads(model, batch, use_grouped: bool):
    model.zero_grad(set_to_none=True)
    if use_grouped:
        nll, n, _ = token_stats(model, batch)
    else:
        # token_stats switches to grouped attention; the reference is the same loss under plain SDPA.
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        targets = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        n = int((targets != -100).sum())
    (nll / n).backward()
    return float(nll) / n, {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("padded", [False, True])
def test_grouped_attention_matches_sdpa_loss_and_gradients(tiny_model, padded):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    assert model.config.num_attention_heads != model.config.num_key_value_heads  # grouped-query heads
    batch = batch_of(padded)
    want_loss, want_grads = loss_and_grads(model, batch, use_grouped=False)
    got_loss, got_grads = loss_and_grads(model, batch, use_grouped=True)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_grouped_attention_routes_through_the_new_function_and_restores_sdpa(tiny_model, monkeypatch):
    import tailor.kernels.attention as attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    seen = []
    original = attention.grouped_attention

    def spy(*args, **kwargs):
        seen.append(model.config._attn_implementation)
        return original(*args, **kwargs)

    monkeypatch.setitem(attention.AttentionInterface._global_mapping, NAME, spy)
    with pytest.raises(RuntimeError):
        with grouped(model):
            model(input_ids=torch.tensor([[5, 6, 7]]))
            raise RuntimeError("boom")
    assert seen == [NAME] * model.config.num_hidden_layers
    assert model.config._attn_implementation == "sdpa"  # generation after training keeps SDPA
    model(input_ids=torch.tensor([[5, 6, 7]]))
    assert len(seen) == model.config.num_hidden_layers


@pytest.mark.parametrize("padded", [False, True])
def test_scoring_attention_matches_sdpa(tiny_model, padded):
    """Without gradients the grouped path runs the fused kernel with an additive mask: SDPA's loss."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    batch = batch_of(padded)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        targets = batch["labels"][:, 1:]
        want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100)
        nll, n, _ = token_stats(model, batch)
    assert torch.isfinite(nll)
    assert float(nll) / n == pytest.approx(float(want), rel=1e-5)


def test_scoring_rows_with_no_key_stay_finite():
    """A query row whose keys are all masked averages the values (finfo.min), as the training path does."""
    from tailor.kernels.attention import grouped_attention

    class Module:
        is_causal, training = True, False

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    mask = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])[None, None]
    with torch.no_grad():
        got, _ = grouped_attention(Module, q, k, v, mask)
    want, _ = grouped_attention(Module, q, k, v, mask)  # with gradients on: the matmul path
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)


def test_bf16_training_softmax_matches_the_fp32_one(monkeypatch):
    """Training under autocast takes the softmax in bf16 (fp32 inside the kernel); output and gradients stay
    within bf16 rounding of the fp32 softmax cast to bf16, and a row with no key stays finite."""
    import tailor.kernels.attention as attention

    class Module:
        is_causal, training = True, True

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8).bfloat16(), torch.randn(2, 2, 6, 8).bfloat16(), torch.randn(2, 2, 6, 8).bfloat16())
    mask = torch.ones(6, 6, dtype=torch.bool).tril()[None, None].repeat(2, 1, 1, 1)
    mask[1, :, 4:] = False  # padding rows: no key at all
    grad = torch.randn(2, 6, 4, 8).bfloat16()

    def run(bf16_softmax: bool):
        monkeypatch.setattr(attention, "BF16_SOFTMAX", bf16_softmax)
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out, _ = attention.grouped_attention(Module, *inputs, mask)
        out.backward(grad)
        return out.detach(), [t.grad for t in inputs]

    want, want_grads = run(False)
    got, got_grads = run(True)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    for g, w in zip(got_grads, want_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("dtype,autocast", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)])
@pytest.mark.parametrize("bf16_softmax", [True, False])
@pytest.mark.parametrize("prefix", [0, 3])
def test_recomputed_probabilities_give_the_kept_ones_gradients_bit_for_bit(monkeypatch, dtype, autocast,
                                                                           bf16_softmax, prefix):
    """Training recomputes the probabilities in the backward instead of keeping them: output and gradients are
    those of keeping them, bit for bit, in fp32, under bf16 autocast and on bf16 tensors, with padding rows that
    attend to nothing and with keys longer than the queries (a shared prefix); and the forward keeps at least
    the probabilities' bytes fewer."""
    import tailor.kernels.attention as attention

    class Module:
        is_causal, training = True, True

    torch.manual_seed(0)
    batch, heads, kv_heads, length, size = 3, 6, 2, 10, 16
    keys = length + prefix
    # As transformers passes them: (B, T, H, D) projections viewed with heads second.
    q = torch.randn(batch, length, heads, size, dtype=dtype).transpose(1, 2)
    k, v = (torch.randn(batch, keys, kv_heads, size, dtype=dtype).transpose(1, 2) for _ in range(2))
    mask = torch.ones(length, keys, dtype=torch.bool).tril(prefix)[None, None].repeat(batch, 1, 1, 1)
    mask[1, :, 7:] = False  # padding queries: no key at all
    mask[2, :, :, prefix + 8:] = False  # padding keys
    grad = torch.randn(batch, length, heads, size)
    monkeypatch.setattr(attention, "BF16_SOFTMAX", bf16_softmax)

    def run(recompute: bool):
        monkeypatch.setattr(attention, "RECOMPUTE", recompute)
        inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        outs = []

        def forward():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                outs.append(attention.grouped_attention(Module, *inputs, mask)[0])

        kept = saved_bytes(forward)
        outs[0].backward(grad.to(outs[0].dtype))
        return kept, [outs[0].detach()] + [t.grad for t in inputs]

    kept_off, want = run(False)
    kept_on, got = run(True)
    for name, g, w in zip(["output", "query", "key", "value"], got, want):
        assert g.dtype == w.dtype and torch.isfinite(g).all(), name
        assert torch.equal(g, w), name
    probabilities = batch * heads * length * keys * (2 if dtype == torch.bfloat16 or (autocast and bf16_softmax) else 4)
    assert kept_off - kept_on >= probabilities


def test_training_attention_with_dropout_keeps_its_probabilities(monkeypatch):
    """Dropout's random mask cannot be recomputed: such a module trains through the probabilities it kept."""
    import tailor.kernels.attention as attention

    class Module:
        is_causal, training = True, True

    calls = []
    monkeypatch.setattr(attention.Recomputed, "apply", lambda *a: calls.append(a))
    q, k, v = torch.randn(1, 2, 4, 8, requires_grad=True), torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8)
    out, _ = attention.grouped_attention(Module, q, k, v, None, dropout=0.5)
    out.sum().backward()
    assert not calls and q.grad is not None


@pytest.mark.parametrize("padded", [False, True])
def test_a_model_trains_the_same_with_recomputed_probabilities(tiny_model, monkeypatch, padded):
    """Through a whole grouped-query model (rotary keys as transformers lays them out): the loss and every
    weight's gradient equal, bit for bit, those of keeping the probabilities."""
    import tailor.kernels.attention as attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    batch = batch_of(padded)
    monkeypatch.setattr(attention, "RECOMPUTE", False)
    want_loss, want_grads = loss_and_grads(model, batch, use_grouped=True)
    monkeypatch.setattr(attention, "RECOMPUTE", True)
    got_loss, got_grads = loss_and_grads(model, batch, use_grouped=True)
    assert got_loss == want_loss
    for name, grad in want_grads.items():
        assert torch.equal(got_grads[name], grad), name
