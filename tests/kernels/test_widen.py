"""Decoding's fp32 arithmetic on bf16 weights (widen.cpp's product, the fp32 norm, rotary_f32, argmax_f32): CPUs
with AVX-512, with or without AVX512-BF16."""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tailor import kernels
from tailor.kernels import build, matmul

pytestmark = pytest.mark.skipif(not build.buildable(), reason="these kernels need AVX-512F, which this CPU lacks")


def ops():
    assert build.built()
    return torch.ops.tailor_kernels


@pytest.mark.parametrize("n,k,rows", [(64, 96, 1), (48, 64, 5), (192, 576, 3), (960, 576, 7)])
def test_dot_widen_is_the_fp32_product_with_the_bf16_weight(n, k, rows):
    """Both layouts (4 blocks of 16 per task where N allows, else 1), any number of rows."""
    torch.manual_seed(n + k)
    weight = torch.randn(n, k).to(torch.bfloat16)
    x = torch.randn(rows, k)
    exact = F.linear(x.double(), weight.double())
    for packed in (matmul.pack_widen(weight), matmul.pack(weight)):
        got = ops().dot_widen(x, packed)
        assert got.dtype == torch.float32 and got.shape == (rows, n)
        torch.testing.assert_close(got.double(), exact, rtol=0, atol=1e-4)
        # A row's result does not depend on the rows beside it (drafted tokens are checked row by row).
        assert torch.equal(torch.cat([ops().dot_widen(x[i:i + 1].contiguous(), packed) for i in range(rows)]), got)


def test_product_takes_fp32_rows_on_bf16_weights():
    weight = torch.randn(64, 32).to(torch.bfloat16)
    x = torch.randn(2, 3, 32)
    product = kernels.Product(weight)
    torch.testing.assert_close(product(x), F.linear(x, weight.float()), rtol=1e-5, atol=1e-5)
    with build.switched(False):  # kernels off: the same product through F.linear on the widened weight
        assert torch.equal(kernels.Product(weight)(x), F.linear(x, weight.float()))


def test_the_fp32_norm_on_a_bf16_weight_is_llama_rms_norm():
    torch.manual_seed(0)
    norm = LlamaRMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64))
    norm = norm.to(torch.bfloat16)
    x = torch.randn(3, 64) * 4
    got = kernels.rms_norm(norm, x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, norm(x), rtol=1e-5, atol=1e-5)


def test_rotary_f32_turns_queries_and_keys_and_fills_the_caches():
    torch.manual_seed(0)
    batch, q, heads, kv, d, length = 2, 1, 4, 2, 16, 8
    h = torch.randn(batch, q, (heads + 2 * kv) * d)
    angle = torch.randn(batch, q, d)
    cos, sin = angle.cos().contiguous(), angle.sin().contiguous()
    keys, values = torch.zeros(batch, kv, length, d), torch.zeros(batch, kv, length, d)
    slots = torch.tensor([[3], [5]])
    query = ops().rotary_f32(h, cos, sin, keys, values, slots, heads, kv)
    # transformers' rotation: t * cos + rotate_half(t) * sin
    turned = h[..., :(heads + kv) * d].view(batch, q, heads + kv, d).transpose(1, 2)
    half = d // 2
    rotated = torch.cat((-turned[..., half:], turned[..., :half]), dim=-1)
    want = turned * cos[:, None] + rotated * sin[:, None]
    torch.testing.assert_close(query, want[:, :heads], rtol=1e-6, atol=1e-6)
    for b, slot in enumerate((3, 5)):
        torch.testing.assert_close(keys[b, :, slot], want[b, heads:, 0], rtol=1e-6, atol=1e-6)
        assert torch.equal(values[b, :, slot], h[b, 0, (heads + kv) * d:].view(kv, d))
        assert not keys[b, :, [s for s in range(length) if s != slot]].any()  # nothing else written


def test_argmax_f32_is_torch_s_first_largest():
    rows = torch.randn(4, 1000)
    rows[1, 7] = rows[1, 900] = 50.0  # a tie: the first
    rows[2] = float("-inf")
    rows[3, 11] = float("nan")  # torch takes a NaN as the largest
    odd = torch.randn(3, 37)  # a length that is not whole vectors
    for logits in (rows, odd, torch.randn(2, 3, 49152)):
        assert torch.equal(kernels.argmax(logits), logits.argmax(-1))
