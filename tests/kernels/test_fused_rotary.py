"""The kernel rotary embedding trains as transformers' rotary under autocast does, and steps aside where it should not run."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama import modeling_llama

from tailor import kernels
from tailor.kernels.rotary import ORIGINAL, Rotary, fused_rotary

from tests.tiny import make_causal_lm

pytestmark = pytest.mark.skipif(not kernels.supported(), reason="the kernel needs AVX512-BF16, which this CPU lacks")


@pytest.fixture(autouse=True)
def built():
    """The ops are called directly here: built (once a process) before any test, whichever runs first."""
    assert kernels.available(), "this CPU has AVX512-BF16 but the kernels did not build"


def tables(batch: int, length: int, size: int):
    positions = torch.arange(length)[None].expand(batch, length) + torch.arange(batch)[:, None] * 7
    freqs = positions[..., None].float() / (10000 ** (torch.arange(0, size, 2).float() / size))
    angles = torch.cat([freqs, freqs], -1)
    return angles.cos(), angles.sin()


@pytest.mark.parametrize("batch, table_batch", [(3, 3), (3, 1)])
def test_forward_is_torch_then_autocast_and_backward_is_closer_to_exact(batch, table_batch):
    torch.manual_seed(batch + table_batch)
    length, heads, size = 11, 5, 64
    flat = (torch.randn(batch, length, heads * size) * 3).bfloat16()
    cos, sin = tables(table_batch, length, size)
    grad = torch.randn(batch, heads, length, size).bfloat16()

    def rotated(x, use_kernel: bool):
        q = x.view(batch, length, heads, size).transpose(1, 2)  # as LlamaAttention lays it out
        if use_kernel:
            return Rotary.apply(q, cos, sin)
        return ORIGINAL(q, q, cos, sin)[0]

    x = flat.clone().requires_grad_()
    want = rotated(x, False)
    assert want.dtype == torch.float32  # bf16 times the fp32 tables: autocast casts it at the next product
    want.to(torch.bfloat16).backward(grad)
    torch_grad = x.grad
    x = flat.clone().requires_grad_()
    got = rotated(x, True)
    got.backward(grad)
    assert got.dtype == torch.bfloat16 and got.stride(-1) == 1
    assert torch.equal(got, want.to(torch.bfloat16))  # bit for bit
    assert x.grad.stride() == flat.stride()  # the projection's layout: its transposes stay views

    exact_x = flat.double().requires_grad_()
    ORIGINAL(*[exact_x.view(batch, length, heads, size).transpose(1, 2)] * 2, cos.double(), sin.double())[0] \
        .backward(grad.double())
    error = lambda g: float((g.double() - exact_x.grad).norm() / exact_x.grad.norm())  # noqa: E731
    assert error(x.grad) < 4e-3  # bf16 rounding
    assert error(x.grad) <= error(torch_grad) * 1.05  # one rounding, not three


def test_a_model_trains_through_it_and_it_steps_aside_elsewhere(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(make_causal_lm(tmp_path / "m", hidden=128))  # head size 32
    ids = torch.randint(5, 500, (2, 16))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return float(loss), {k: p.grad.clone() for k, p in model.named_parameters()}

    want_loss, want = loss_and_grads()
    calls = []
    original = Rotary.apply
    with fused_rotary(model), pytest.MonkeyPatch.context() as patch:
        patch.setattr(Rotary, "apply", lambda *a: calls.append(1) or original(*a))
        got_loss, got = loss_and_grads()
        assert len(calls) == 2 * model.config.num_hidden_layers  # queries and keys of every layer
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids)  # scoring: transformers' rotary
        model(input_ids=ids, labels=ids).loss.backward()  # fp32 training, no autocast: transformers' rotary
    assert len(calls) == 2 * model.config.num_hidden_layers
    assert modeling_llama.apply_rotary_pos_emb is ORIGINAL  # restored
    assert got_loss == pytest.approx(want_loss, rel=1e-3)
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=5e-2, atol=5e-3, msg=name)
