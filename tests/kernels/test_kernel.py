"""The decoding kernels give torch's own results bit for bit (F.linear, argmax, LlamaRMSNorm), or are not used."""

import pytest
import torch
import torch.nn.functional as F

from tailor import kernels
from tailor.kernels import build, matmul

# Skipped only where the CPU lacks AVX512-BF16; where it has it, a kernel that fails to build fails the tests.
needs_kernel = pytest.mark.skipif(not kernels.supported(), reason="no AVX512-BF16 on this CPU")


@needs_kernel
def test_the_kernel_builds_where_the_cpu_supports_it():
    assert kernels.available(), "this CPU has AVX512-BF16 but the kernel did not build (see the warning above)"


@needs_kernel
@pytest.mark.parametrize("n, k", [(64, 64), (96, 576), (48, 1536), (576, 1536)])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 11])
def test_product_equals_linear_bit_for_bit(n, k, rows):
    torch.manual_seed(rows)
    weight = (torch.randn(n, k) * 0.05).to(torch.bfloat16)
    x = torch.randn(2, rows, k).to(torch.bfloat16)[:, None]  # (2, 1, rows, K): any leading shape
    product = kernels.Product(weight)
    assert product.packed is not None
    got = product(x)
    assert got.shape == (2, 1, rows, n)
    assert torch.equal(got, F.linear(x, weight))
    # The probe, whose sums cancel exactly, tells the ways of adding apart: another K block gives other bits.
    probe_rows = min(2 * rows, matmul.MOST_ROWS)
    probe_x, probe_w, packed = matmul.probe(n, k, probe_rows)
    op, block = matmul.way_for(probe_rows, n, k, torch.get_num_threads())
    assert torch.equal(op(probe_x, packed, block), F.linear(probe_x, probe_w))
    if k > 64:
        assert not torch.equal(torch.ops.tailor_kernels.dot_bf16(probe_x, packed, 64), F.linear(probe_x, probe_w))


@needs_kernel
def test_pack_layout():
    weight = torch.arange(32 * 4, dtype=torch.float32).reshape(32, 4).to(torch.bfloat16)
    packed = matmul.pack(weight).view(torch.bfloat16).view(2, 2, 16, 2)  # (N/16, K/2, 16, pair)
    assert torch.equal(packed[1, 0, 3], weight[16 + 3, 0:2])
    assert torch.equal(packed[0, 1, 15], weight[15, 2:4])


@needs_kernel
def test_shape_no_block_reproduces_keeps_linear(monkeypatch):
    """When no way tried gives F.linear's bits, the product is F.linear itself."""
    monkeypatch.setattr(matmul, "candidates", lambda rows, k: [("dot_bf16", 64)])
    matmul.way_for.cache_clear()
    try:
        weight = torch.randn(32, 576).to(torch.bfloat16)
        product = kernels.Product(weight)
        x = torch.randn(1, 576).to(torch.bfloat16)
        assert matmul.way_for(1, 32, 576, torch.get_num_threads()) is None
        assert not product.exact_by_row()
        assert torch.equal(product(x), F.linear(x, weight))
    finally:
        matmul.way_for.cache_clear()


def test_fp32_and_odd_shapes_use_linear():
    for weight in (torch.randn(32, 64), torch.randn(40, 64).to(torch.bfloat16)):  # fp32; N not a multiple of 16
        product = kernels.Product(weight)
        assert product.packed is None
        x = torch.randn(3, 64).to(weight.dtype)
        assert torch.equal(product(x), F.linear(x, weight))


def test_switched_off_nothing_runs_on_the_kernels(monkeypatch):
    """decode.kernels / train.kernels false: within `build.switched(False)` every op is torch's, nothing is built."""
    calls = []
    monkeypatch.setattr(build, "built", lambda: calls.append(1) or True)
    weight = torch.randn(32, 64).to(torch.bfloat16)
    with build.switched(False):
        assert not kernels.available() and not kernels.avx512_available()
        product = kernels.Product(weight)
        assert product.packed is None
        x = torch.randn(3, 64).to(torch.bfloat16)
        assert torch.equal(product(x), F.linear(x, weight))
        assert torch.equal(kernels.argmax(x), x.float().argmax(-1))
    assert not calls  # never asked to build
    # On again after the block (with the build stubbed as done), where the CPU has the instructions.
    assert kernels.available() == kernels.supported() and kernels.avx512_available() == build.buildable()


@needs_kernel
def test_by_row_rounds_each_row_as_a_one_row_product():
    """oneDNN without AMX blocks K = 1536 by 512 for one row and by 1024 for several: `by_row` gives the
    former (with AMX the two are the same)."""
    torch.manual_seed(0)
    _, weight, _ = matmul.probe(64, 1536, 1)
    x, _, _ = matmul.probe(64, 1536, 3)
    product = kernels.Product(weight)
    one_by_one = torch.cat([F.linear(x[i:i + 1], weight) for i in range(3)])
    together = F.linear(x, weight)
    assert torch.equal(product(x, by_row=True), one_by_one)
    assert torch.equal(product(x), together)


@pytest.mark.skipif(not (kernels.supported() and "amx_bf16" in build.cpu_flags()), reason="no AMX here")
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_amx_kernel_equals_linear_and_differs_from_a_vdpbf16ps_chain(rows):
    """With AMX oneDNN multiplies with tdpbf16ps, which rounds apart from any vdpbf16ps chain: the kernel
    takes the AMX way, bit for bit F.linear, and the probe shows the chain's other bits."""
    x, weight, packed = matmul.probe(80, 576, rows)  # 5 groups of 16 outputs: one full task, one tail group
    op, block = matmul.way_for(rows, 80, 576, torch.get_num_threads())
    assert op is torch.ops.tailor_kernels.dot_amx
    assert torch.equal(op(x, packed, block), F.linear(x, weight))
    assert not any(torch.equal(torch.ops.tailor_kernels.dot_bf16(x, packed, b), F.linear(x, weight)) for b in matmul.BLOCKS)


@needs_kernel
@pytest.mark.parametrize("width", [1, 15, 16, 17, 49152 + 5])
def test_argmax_gives_torch_s_indices_ties_and_nan_included(width):
    torch.manual_seed(width)
    rows = torch.randn(6, width).to(torch.bfloat16)
    rows[1] = rows[1].round()  # many ties: the first index wins
    rows[2] = float("-inf")
    rows[3, width // 2] = float("nan")  # torch takes the first NaN as the largest
    rows[4] = rows[4].abs().neg()
    rows[4, -1] = 5.0  # the largest value in the tail
    got = kernels.argmax(rows[:, None])  # (6, 1): any leading shape
    assert got.shape == (6, 1)
    assert torch.equal(got[:, 0], rows.float().argmax(-1))


@pytest.mark.skipif(not (kernels.supported() and "amx_bf16" in build.cpu_flags()), reason="no AMX here")
@pytest.mark.parametrize("rows", [17, 40])
def test_amx_kernel_takes_any_number_of_rows_sixteen_at_a_time(rows):
    x, weight, packed = matmul.probe(80, 576, rows)
    got = torch.ops.tailor_kernels.dot_amx(x, packed, 576)
    want = torch.cat([torch.ops.tailor_kernels.dot_amx(x[r:r + 16].contiguous(), packed, 576) for r in range(0, rows, 16)])
    assert torch.equal(got, want)
    if matmul.way_for(rows, 80, 576, torch.get_num_threads()) is not None:
        assert torch.equal(got, F.linear(x, weight))


@needs_kernel
@pytest.mark.parametrize("hidden", [64, 576])
def test_rms_norm_equals_llama_s_bit_for_bit(hidden):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(hidden)
    differing = 0
    for trial in range(40):
        norm = LlamaRMSNorm(hidden, eps=1e-5)
        with torch.no_grad():
            norm.weight.copy_(torch.randn(hidden) * (0.5 + trial % 3))
        norm = norm.to(torch.bfloat16)
        x = (torch.randn(4, 1, hidden) * 10.0 ** (trial % 7 - 3)).to(torch.bfloat16)  # (B, q, H) as decoding has it
        got = kernels.rms_norm(norm, x)
        assert got.shape == x.shape
        differing += int((got != norm(x)).sum())
    assert differing == 0
    fp32 = LlamaRMSNorm(hidden)  # fp32 weights, or anything not bf16, is the module itself
    x = torch.randn(2, hidden)
    assert torch.equal(kernels.rms_norm(fp32, x), fp32(x))
