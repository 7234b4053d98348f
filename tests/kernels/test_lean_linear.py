"""Projections under bf16 autocast keep one bf16 copy of a shared input and no weight cast: the same loss, the
same gradients to fp32 rounding, less kept for the backward."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from tailor.config.model import LoraConfig
from tailor.kernels.linear import end_pass, lean_projections, lean_projections_of
from tailor.kernels.mlp import lean_mlps
from tailor.models.lora import wrap

from saved import saved_bytes

SHAPE = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SHAPE)).train()


def loss_and_grads(model, ids, lean: bool, half: bool = True, mlp: bool = True):
    model.zero_grad(set_to_none=True)
    with lean_projections(model, enabled=lean) as on, lean_mlps(model, enabled=mlp), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
        assert on == lean
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


IDS = torch.randint(0, SHAPE["vocab_size"], (3, 17), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mlp", [True, False], ids=["lean-mlp", "module-mlp"])
def test_same_loss_and_gradients_under_autocast(mlp):
    model = llama()
    # q, k, v, o, gate, up, down in each layer; the LM head is not among them
    assert len(lean_projections_of(model)) == 7 * SHAPE["num_hidden_layers"]
    loss, grads = loss_and_grads(model, IDS, lean=False, mlp=mlp)
    lean_loss, lean_grads = loss_and_grads(model, IDS, lean=True, mlp=mlp)
    assert torch.equal(loss, lean_loss)  # the forward is autocast's, bit for bit
    assert grads.keys() == lean_grads.keys() and any("q_proj" in n for n in grads)
    for name in grads:  # the input gradients add up in another order: equal to fp32 rounding
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=2e-5, atol=1e-6, msg=name)


def test_fp32_runs_the_modules_own_forward():
    model = llama()
    loss, grads = loss_and_grads(model, IDS, lean=False, half=False)
    lean_loss, lean_grads = loss_and_grads(model, IDS, lean=True, half=False)
    assert torch.equal(loss, lean_loss)
    for name in grads:
        assert torch.equal(lean_grads[name], grads[name]), name


def kept(model, lean: bool) -> int:
    with lean_projections(model, enabled=lean), lean_mlps(model), torch.autocast("cpu", dtype=torch.bfloat16):
        return saved_bytes(lambda: model(input_ids=IDS, labels=IDS).loss, leave_out=list(model.parameters()))


def test_keeps_one_input_copy_and_no_weight_cast():
    model = llama()
    layer = model.model.layers[0]
    weights = sum(m.weight.numel() for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                                             layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj))
    tokens, hidden = IDS.numel(), SHAPE["hidden_size"]
    # per layer: the six weight casts (down's is GatedDown's, not kept) and three of the five input copies
    # (q, k, v share one, gate and up another), all bf16
    saved = SHAPE["num_hidden_layers"] * 2 * (weights + 3 * tokens * hidden)
    assert kept(model, lean=False) - kept(model, lean=True) == saved


def test_an_input_changed_in_place_is_cast_again():
    model = llama()
    proj = model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, SHAPE["hidden_size"])
    with lean_projections(model), torch.autocast("cpu", dtype=torch.bfloat16):
        first = proj(x)
        x.mul_(2)
        second = proj(x)
    torch.testing.assert_close(second.float(), 2 * first.float(), rtol=2e-2, atol=1e-2)
    assert not torch.equal(first, second)


def test_lora_adapters_run_lean_their_frozen_bases_and_biased_projections_do_not():
    lora = wrap(llama(), LoraConfig(rank=4, dropout=0.0, target_modules=["q_proj", "v_proj"]), "causal")
    lean = lean_projections_of(lora)
    assert lean and all(m.weight.requires_grad for m in lean)  # frozen base weights are left alone
    assert sum("lora_" in n for n, m in lora.named_modules() if any(m is x for x in lean)) == 4 * SHAPE["num_hidden_layers"]
    loss, grads = loss_and_grads(lora, IDS, lean=False)
    lean_loss, lean_grads = loss_and_grads(lora, IDS, lean=True)
    assert torch.equal(loss, lean_loss) and any("lora_A" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=2e-5, atol=1e-6, msg=name)
    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(Qwen2Config(**SHAPE)).train()
    q = qwen.model.layers[0].self_attn.q_proj
    assert q.bias is not None and not any(q is m for m in lean_projections_of(qwen))
    loss, grads = loss_and_grads(qwen, IDS, lean=False)
    lean_loss, lean_grads = loss_and_grads(qwen, IDS, lean=True)
    assert torch.equal(loss, lean_loss)
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=2e-5, atol=1e-6, msg=name)


def passes_grads(model, batches, half_grads: bool, leave: bool = True, one_pass: bool = False):
    """The gradients of `batches` backpropagated one after another, as the passes of one step (or, `one_pass`,
    as a shared prefix's run and the batch's in one pass); read inside the block (`leave` False) or after it."""
    model.zero_grad(set_to_none=True)
    with lean_projections(model, half_grads=half_grads), lean_mlps(model):
        for ids in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            if not one_pass:
                end_pass()
        if not leave:
            return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


SECOND = torch.randint(0, SHAPE["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(2))


def test_half_gradients_are_the_bf16_products_and_later_passes_sum_in_fp32():
    model = llama()
    lean = {n + ".weight" for n, m in model.named_modules() if any(m is x for x in lean_projections_of(model))}
    fp32 = passes_grads(model, [IDS], half_grads=False)
    held = passes_grads(model, [IDS], half_grads=True, leave=False)
    assert lean and held.keys() == fp32.keys()
    for name, grad in held.items():  # the same values, in half the bytes where they are products
        assert grad.dtype == (torch.bfloat16 if name in lean else torch.float32), name
        assert torch.equal(grad.float(), fp32[name]), name
    two = passes_grads(model, [IDS, SECOND], half_grads=False)
    held_two = passes_grads(model, [IDS, SECOND], half_grads=True, leave=False)
    for name, grad in held_two.items():  # the second pass widened the first's and added in fp32: autograd's sum
        assert grad.dtype == torch.float32 and torch.equal(grad, two[name]), name
    # Within one pass the second product adds into the bf16 gradient: the fp32 sum rounded to bf16, give or take
    # each product's own rounding (half a bf16 step of each).
    second = passes_grads(model, [SECOND], half_grads=False)
    joined = passes_grads(model, [IDS, SECOND], half_grads=True, leave=False, one_pass=True)
    for name, grad in joined.items():
        if name in lean:
            assert grad.dtype == torch.bfloat16, name
            bound = (fp32[name].abs() + second[name].abs() + two[name].abs()) * 2.0**-8
            assert bool(((grad.float() - two[name]).abs() <= bound).all()), name
            assert not torch.equal(grad.float(), two[name]), name  # rounded: not secretly fp32
        else:
            assert torch.equal(grad, two[name]), name


def test_half_gradients_are_widened_on_leaving():
    model = llama()
    fp32 = passes_grads(model, [IDS], half_grads=False)
    left = passes_grads(model, [IDS], half_grads=True)
    for p in model.parameters():
        assert p.grad_dtype == torch.float32  # as before the block: a later bf16 gradient would be refused
    for name, grad in left.items():
        assert grad.dtype == torch.float32 and torch.equal(grad, fp32[name]), name
