"""Where the RMSNorm kernel cannot run, training's norms keep the input and the reciprocal root alone: the
module's forward bit for bit, its gradients to fp32 rounding, one hidden-width tensor a norm fewer kept."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tailor.kernels import build
from tailor.kernels.norm import LeanNorm, fused_norms

from saved import saved_bytes


@pytest.mark.parametrize("shape, scale", [((3, 7, 64), 1.0), ((300, 576), 1e-3), ((2, 5, 576), 1e3)])
@pytest.mark.parametrize("trained_weight", [True, False])
def test_the_modules_forward_bit_for_bit_and_its_gradients(shape, scale, trained_weight):
    torch.manual_seed(0)
    norm = LlamaRMSNorm(shape[-1], eps=1e-5)
    norm.weight.data.normal_()
    norm.weight.requires_grad_(trained_weight)
    x = (torch.randn(shape) * scale).requires_grad_()
    grad = torch.randn(shape)

    def run(forward):
        x.grad = norm.weight.grad = None
        out = forward()
        out.backward(grad)
        return out.detach(), x.grad, norm.weight.grad

    want = run(lambda: norm(x))
    got = run(lambda: LeanNorm.apply(x, norm.weight, norm.variance_epsilon))
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6 / scale)
    if trained_weight:
        torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
    else:
        assert got[2] is None and want[2] is None


def test_one_hidden_width_tensor_a_norm_fewer():
    torch.manual_seed(0)
    norm = LlamaRMSNorm(64, eps=1e-5)
    x = torch.randn(4, 32, 64, requires_grad=True)
    full = saved_bytes(lambda: norm(x))
    lean = saved_bytes(lambda: LeanNorm.apply(x, norm.weight, norm.variance_epsilon))
    assert full - lean == x.numel() * 4


def test_a_model_without_the_kernel_trains_through_it_the_same(tiny_model):
    """With the kernels switched off (as on a CPU without AVX-512F): every norm of a Llama model runs LeanNorm,
    the loss is the module's bit for bit and the gradients the same to fp32 rounding, and leaving the block
    restores the modules."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model).train()
    ids = torch.randint(5, 500, (3, 12), generator=torch.Generator().manual_seed(1))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    want_loss, want = loss_and_grads()
    calls = []
    original = LeanNorm.apply
    with build.switched(False), fused_norms(model) as name:
        assert name == "lean RMSNorm backward"
        LeanNorm.apply = lambda *a: calls.append(1) or original(*a)
        try:
            got_loss, got = loss_and_grads()
        finally:
            LeanNorm.apply = original
    norms = [m for m in model.modules() if type(m) is LlamaRMSNorm]
    assert len(calls) == len(norms) == 2 * model.config.num_hidden_layers + 1
    assert torch.equal(got_loss, want_loss)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-8, msg=n)
    assert not any("forward" in vars(m) for m in norms)
