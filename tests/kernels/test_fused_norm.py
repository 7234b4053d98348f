"""The kernel RMSNorm trains as transformers' LlamaRMSNorm does, and steps aside where it should not run."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tailor import kernels
from tailor.kernels import build
from tailor.kernels.norm import Norm, fused_norms

pytestmark = pytest.mark.skipif(not build.buildable(), reason="the kernel needs AVX-512F, which this CPU lacks")


@pytest.fixture(autouse=True)
def built():
    """The ops are called directly here: built (once a process) before any test, whichever runs first."""
    assert kernels.avx512_available(), "this CPU has AVX-512F but the kernels did not build"


@pytest.mark.parametrize("rows, scale", [(1, 1.0), (37, 1e-3), (300, 1e3)])
def test_forward_and_gradients_match_the_module(rows, scale):
    torch.manual_seed(rows)
    norm = LlamaRMSNorm(64, eps=1e-6)
    norm.weight.data.normal_()
    x = (torch.randn(rows, 64) * scale).requires_grad_()
    grad = torch.randn(rows, 64)
    want = norm(x)
    want.backward(grad)
    want_dx, want_dw = x.grad.clone(), norm.weight.grad.clone()
    x.grad, norm.weight.grad = None, None
    got = Norm.apply(x, norm.weight, norm.variance_epsilon)
    got.backward(grad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, want_dx, rtol=1e-4, atol=1e-6 / scale)
    torch.testing.assert_close(norm.weight.grad, want_dw, rtol=1e-4, atol=1e-5)


def test_a_model_trains_through_it_with_the_same_gradients(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.randint(5, 500, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    calls = []
    original = Norm.apply
    with fused_norms(model), pytest.MonkeyPatch.context() as patch:
        patch.setattr(Norm, "apply", lambda *a: calls.append(1) or original(*a))
        model(input_ids=ids, labels=ids).loss.backward()
        assert len(calls) == 2 * model.config.num_hidden_layers + 1  # every norm of the model took the kernel
        with torch.no_grad():
            model(input_ids=ids)  # scoring: the module's own forward
        copy.deepcopy(model).bfloat16()(input_ids=ids)  # a bf16 copy: its own weights, the module's forward
    assert len(calls) == 2 * model.config.num_hidden_layers + 1
    assert all("forward" not in vars(m) for m in model.modules())  # restored
    for name, grad in want.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-4, atol=1e-6, msg=name)
