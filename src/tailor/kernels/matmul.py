"""Decoding's matrix products at memory speed, with the rounding of torch's own bf16 F.linear.

At batch 1 to 8 a decoding step reads every weight once, and torch's bf16 F.linear (oneDNN)
reaches 11-15 GB/s there against the 25-30 GB/s the memory gives: it repacks the weight on every
call. `matmul.cpp` streams a weight packed once into pairs along K, with the arithmetic
oneDNN uses on this CPU:
- with AMX (`dot_amx`): tdpbf16ps tiles, the K chunks of 32 in order into one accumulator;
- with AVX512-BF16 alone (`dot_bf16`): per output, vdpbf16ps over K in blocks, the block sums added in
  order. oneDNN's block depends on the shape (512 for K = 576; for K = 1536, 512 at one row and 1024
  at more).
`Product` picks the way per (rows, N, K, threads) by comparing each candidate with F.linear on a
probe whose sums cancel exactly, where every rounding shows; a shape no candidate reproduces keeps
F.linear. Replies therefore stay token for token those of `model.generate`.

On a CPU with AVX-512 but without AVX512-BF16, where bf16 arithmetic is emulated, the decoder keeps its
activations in fp32 and `Product` takes fp32 rows against the same packed bf16 weight (`dot_widen`,
widen.cpp): the bytes of bf16 weights, the arithmetic of fp32.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from tailor.kernels.build import LANES, available, avx512_available, built, cpu_flags, supported
BLOCKS = (512, 1024, 256, 2048)  # vdpbf16ps K blocks tried against F.linear, the common ones first
AMX_CHUNK = 32  # tdpbf16ps takes K 32 at a time (and up to 16 rows, which the kernel loops over)
MOST_ROWS = 16  # beyond this a product is compute-bound and oneDNN's blocked kernels are as fast or faster


def pack(weight: torch.Tensor) -> torch.Tensor:
    """(N, K) bf16 -> (N/16, K/2, 16) int32: for each block of 16 outputs, K's pairs in order."""
    n, k = weight.shape
    return weight.detach().reshape(n // LANES, LANES, k // 2, 2).permute(0, 2, 1, 3).contiguous().view(
        torch.int32).view(n // LANES, k // 2, LANES)


def pack_widen(weight: torch.Tensor) -> torch.Tensor:
    """(N, K) bf16 -> (N/(16U), K/2, 16U) int32 for `dot_widen`: for each task of U blocks of 16 outputs (U 4
    where N allows, else 1), for each pair along K, its U x 16 outputs' pairs: one contiguous stream per task."""
    n, k = weight.shape
    width = 4 * LANES if n % (4 * LANES) == 0 else LANES
    return weight.detach().reshape(n // width, width, k // 2, 2).permute(0, 2, 1, 3).contiguous().view(
        torch.int32).view(n // width, k // 2, width)


@functools.cache
def probe_weight(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight (N, K) whose second half of K repeats the first in the order `order`, and its packing; kept
    for the row counts decoding meets next, until `forget_probes()`."""
    gen = torch.Generator().manual_seed(n * 31 + k)
    half = k // 2
    weight = torch.randn(n, k, generator=gen).to(torch.bfloat16)
    order = torch.randperm(half, generator=gen)
    weight[:, half:2 * half] = weight[:, :half][:, order]
    return weight, pack(weight), order


def forget_probes() -> None:
    """Drop the probes' weights (the LM head's and its packing alone are 108 MB at SmolLM2's shapes): training
    calls it, as it holds the most memory; the ways found stay known, and a later decoding meeting a new row
    count makes its probe again."""
    probe_weight.cache_clear()


def probe(n: int, k: int, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs (rows, K), weight (N, K) and its packing, whose exact products are all 0: every output
    is rounding alone, so any other order of additions shows."""
    weight, packed, order = probe_weight(n, k)
    half = k // 2
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows)).to(torch.bfloat16)
    x[:, half:2 * half] = -x[:, :half][:, order]
    return x, weight, packed


def candidates(rows: int, k: int) -> list[tuple[str, int]]:
    """The (op, K block) pairs that may reproduce F.linear here, the likeliest first."""
    if rows > MOST_ROWS:  # a prompt's products: oneDNN's own kernels are as fast there (measured with AMX)
        return []
    found = [("dot_amx", k)] if "amx_bf16" in cpu_flags() and k % AMX_CHUNK == 0 else []
    return found + [("dot_bf16", block) for block in BLOCKS]


@functools.cache
def way_for(rows: int, n: int, k: int, threads: int) -> tuple | None:
    """(op, K block) with which the kernel equals F.linear for this shape here, or None (use F.linear)."""
    if not (supported() and built()):
        return None
    x, weight, packed = probe(n, k, rows)
    want = F.linear(x, weight)
    for name, block in candidates(rows, k):
        op = getattr(torch.ops.tailor_kernels, name)
        try:
            got = op(x, packed, block)
        except RuntimeError:  # e.g. the kernel may not use AMX tiles here
            continue
        if torch.equal(got, want):
            return op, block
    return None


class Product:
    """x @ weight.T for decoding: on bf16 rows the packed kernel for up to MOST_ROWS rows where it
    reproduces F.linear, else F.linear; on fp32 rows against a bf16 weight, `dot_widen` (any number of
    rows) or F.linear on the widened weight."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        n, k = weight.shape
        self.fits = weight.dtype == torch.bfloat16 and weight.is_cpu and n % LANES == 0 and k % 2 == 0
        # avx512_available(): some kernel takes packed weights here (it is available() where the CPU has AVX512-BF16)
        self._packed = self._pack() if self.fits and avx512_available() else None

    def _pack(self) -> torch.Tensor:
        return pack(self.weight) if available() else pack_widen(self.weight)

    @property
    def packed(self) -> torch.Tensor | None:
        """The packed weight; None where the kernel does not fit the weight or the kernels are off."""
        if not (self.fits and avx512_available()):
            return None
        if self._packed is None:  # made while the kernels were off
            self._packed = self._pack()
        return self._packed

    def exact_by_row(self) -> bool:
        """True when `__call__(x, by_row=True)` can give each row's one-row F.linear bits in one pass."""
        return self.packed is not None and way_for(1, *self.weight.shape, torch.get_num_threads()) is not None

    def __call__(self, x: torch.Tensor, by_row: bool = False) -> torch.Tensor:
        """With `by_row`, every row is rounded as a one-row product (checking drafted tokens)."""
        packed = self.packed
        n, k = self.weight.shape
        if x.dtype == torch.float32 and self.weight.dtype == torch.bfloat16:
            if packed is None:
                return F.linear(x, self.weight.float())
            return torch.ops.tailor_kernels.dot_widen(x.reshape(-1, k).contiguous(), packed).view(*x.shape[:-1], n)
        if packed is None or x.dtype != torch.bfloat16:
            return F.linear(x, self.weight)
        flat = x.reshape(-1, k)
        way = way_for(1 if by_row else flat.shape[0], n, k, torch.get_num_threads())
        if way is None:
            return F.linear(x, self.weight)
        op, block = way
        return op(flat.contiguous(), packed, block).view(*x.shape[:-1], n)
