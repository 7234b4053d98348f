"""The lean gated MLP: the same loss and gradients as the module's own forward, with two wide activations
kept a layer instead of four."""

import pytest
import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from tailor.kernels.mlp import GATED, gated_mlps, lean_mlps
from tailor.config.model import LoraConfig
from tailor.models.lora import wrap

from saved import saved_bytes

SHAPE = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "qwen3": (Qwen3Config, Qwen3ForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
            "gemma": (GemmaConfig, GemmaForCausalLM), "gemma2": (Gemma2Config, Gemma2ForCausalLM)}
# Gemma's act is GELU (tanh), the others' SiLU: every class in kernels/mlp.py's GATED


def model_of(family: str):
    config_class, model_class = FAMILIES[family]
    torch.manual_seed(0)
    extra = {"head_dim": 16} if family.startswith(("gemma", "qwen3")) else {}
    return model_class(config_class(**SHAPE, **extra)).train()


def loss_and_grads(model, ids, lean: bool, half: bool):
    model.zero_grad(set_to_none=True)
    with lean_mlps(model, enabled=lean) as on, torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=half):
        assert on == lean
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()  # inside the block, as in the training loop (checkpointing reruns forwards in the backward)
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_every_known_gated_mlp_is_tested():
    assert {type(model_of(family).model.layers[0].mlp).__name__ for family in FAMILIES} == GATED


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("half", [False, True], ids=["fp32", "bf16-autocast"])
def test_same_loss_and_gradients_as_the_modules_forward(family, half):
    model = model_of(family)
    assert len(gated_mlps(model)) == SHAPE["num_hidden_layers"]
    ids = torch.randint(0, SHAPE["vocab_size"], (3, 17), generator=torch.Generator().manual_seed(1))
    loss, grads = loss_and_grads(model, ids, lean=False, half=half)
    lean_loss, lean_grads = loss_and_grads(model, ids, lean=True, half=half)
    assert torch.equal(loss, lean_loss)
    assert grads.keys() == lean_grads.keys() and any("down_proj" in n for n in grads)
    for name in grads:  # the same ops in the same dtypes: equal to rounding (here bit for bit)
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)


def test_frozen_projections_and_lora_elsewhere_train_the_rest_the_same():
    """Frozen down/gate weights get no gradient and the others the same; LoRA on attention leaves the MLPs lean,
    LoRA on down_proj keeps that module's own forward."""
    model = model_of("llama")
    for layer in model.model.layers:
        layer.mlp.down_proj.weight.requires_grad_(False)
        layer.mlp.gate_proj.weight.requires_grad_(False)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(2))
    _, grads = loss_and_grads(model, ids, lean=False, half=False)
    _, lean_grads = loss_and_grads(model, ids, lean=True, half=False)
    assert grads.keys() == lean_grads.keys() and not any("down_proj" in n or "gate_proj" in n for n in lean_grads)
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)

    on_attention = wrap(model_of("llama"), LoraConfig(rank=4, dropout=0.0, target_modules=["q_proj", "v_proj"]), "causal")
    assert len(gated_mlps(on_attention)) == SHAPE["num_hidden_layers"]
    on_down = wrap(model_of("llama"), LoraConfig(rank=4, dropout=0.0, target_modules=["down_proj"]), "causal")
    assert gated_mlps(on_down) == []


def kept(model, ids, lean: bool) -> int:
    with lean_mlps(model, enabled=lean):
        return saved_bytes(lambda: model(input_ids=ids, labels=ids))


def test_two_wide_activations_a_layer_fewer():
    model = model_of("llama")
    ids = torch.randint(0, SHAPE["vocab_size"], (4, 32), generator=torch.Generator().manual_seed(3))
    wide = ids.numel() * SHAPE["intermediate_size"] * 4  # one fp32 (batch, tokens, intermediate) tensor
    saved, lean = kept(model, ids, lean=False), kept(model, ids, lean=True)
    assert saved - lean == 2 * wide * SHAPE["num_hidden_layers"]


def test_scoring_and_the_block_exit_keep_the_modules_forward():
    model = model_of("qwen2").eval()
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with lean_mlps(model):
            assert all("forward" in vars(m) for m in gated_mlps(model))
            assert torch.equal(model(input_ids=ids).logits, want)
    assert not any("forward" in vars(m) for m in gated_mlps(model))


def test_under_gradient_checkpointing_too():
    """train.gradient_checkpointing reruns each layer's forward in the backward: the lean MLP inside it."""
    model = model_of("llama")
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 13), generator=torch.Generator().manual_seed(5))
    loss, grads = loss_and_grads(model, ids, lean=False, half=False)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})  # as the loop
    lean_loss, lean_grads = loss_and_grads(model, ids, lean=True, half=False)
    assert torch.equal(loss, lean_loss) and grads.keys() == lean_grads.keys()
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)
