// Products of a few bf16 rows (decoding) with a bf16 weight matrix, bit for bit what oneDNN's matmul gives.
//
// oneDNN (torch's bf16 F.linear on AVX512-BF16 CPUs) packs the weight into pairs along K on every
// call, then accumulates each output over K blocks with vdpbf16ps: within a block one fp32
// accumulator per output, pairs in order; the block sums are added in order. Packing the weight
// once and streaming it here does the same arithmetic without the per-call copy. The K block is a
// parameter: the Python side finds oneDNN's block for each shape by comparing outputs
// (generate/kernel.py) and uses this only where they agree.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <immintrin.h>
#include <cstdint>

namespace {

constexpr int LANES = 16;  // outputs per vector

// rows R of x (K/2 pairs each) against U consecutive 16-output blocks of the packed weight.
template <int R, int U>
void tile(const uint32_t* x, int64_t pairs, const uint32_t* w, int64_t block_pairs, uint16_t* out,
          int64_t n_out) {
  __m512 total[R][U];
  for (int64_t start = 0; start < pairs; start += block_pairs) {
    const int64_t stop = start + block_pairs < pairs ? start + block_pairs : pairs;
    __m512 acc[R][U];
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < U; ++u) acc[r][u] = _mm512_setzero_ps();
    for (int64_t p = start; p < stop; ++p) {
      __m512i wv[U];
      for (int u = 0; u < U; ++u) wv[u] = _mm512_loadu_si512(w + (u * pairs + p) * LANES);
      for (int r = 0; r < R; ++r) {
        const __m512i xv = _mm512_set1_epi32(static_cast<int>(x[r * pairs + p]));
        for (int u = 0; u < U; ++u)
          acc[r][u] = _mm512_dpbf16_ps(acc[r][u], (__m512bh)xv, (__m512bh)wv[u]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < U; ++u)
        total[r][u] = start == 0 ? _mm512_add_ps(_mm512_setzero_ps(), acc[r][u]) : _mm512_add_ps(total[r][u], acc[r][u]);
  }
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * n_out + u * LANES),
                          (__m256i)_mm512_cvtneps_pbh(total[r][u]));
}

template <int U>
void group(const uint32_t* x, int64_t rows, int64_t pairs, const uint32_t* w, int64_t block_pairs, uint16_t* out,
           int64_t n_out) {
  switch (rows) {
    case 1: tile<1, U>(x, pairs, w, block_pairs, out, n_out); break;
    case 2: tile<2, U>(x, pairs, w, block_pairs, out, n_out); break;
    case 3: tile<3, U>(x, pairs, w, block_pairs, out, n_out); break;
    default: tile<4, U>(x, pairs, w, block_pairs, out, n_out); break;
  }
}

// x (M, K) bf16, packed (N/16, K/2, 16) int32 pairs; returns (M, N) bf16. Each task takes U blocks of 16
// outputs and runs every row against them, four rows at a time, while those weights sit in cache.
at::Tensor dot_bf16(const at::Tensor& x, const at::Tensor& packed, int64_t block) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.is_contiguous(), "x: contiguous (M, K) bf16");
  TORCH_CHECK(packed.scalar_type() == at::kInt && packed.dim() == 3 && packed.is_contiguous(), "packed: (N/16, K/2, 16) int32");
  const int64_t m = x.size(0), k = x.size(1), groups = packed.size(0), pairs = packed.size(1);
  TORCH_CHECK(k == 2 * pairs && packed.size(2) == LANES && block % 2 == 0 && block > 0, "shapes do not agree");
  at::Tensor out = at::empty({m, groups * LANES}, x.options());
  const auto* xp = reinterpret_cast<const uint32_t*>(x.data_ptr());
  const auto* wp = reinterpret_cast<const uint32_t*>(packed.data_ptr());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  const int64_t n = groups * LANES, bp = block / 2;
  constexpr int U = 4;
  at::parallel_for(0, (groups + U - 1) / U, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t * U;
      for (int64_t r = 0; r < m; r += 4) {
        const int64_t rows = m - r < 4 ? m - r : 4;
        const uint32_t* xr = xp + r * pairs;
        uint16_t* o = op + r * n;
        if (g + U <= groups) {
          group<U>(xr, rows, pairs, wp + g * pairs * LANES, bp, o + g * LANES, n);
        } else {
          for (int64_t h = g; h < groups; ++h)
            group<1>(xr, rows, pairs, wp + h * pairs * LANES, bp, o + h * LANES, n);
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(tailor_kernels, m) { m.def("dot_bf16(Tensor x, Tensor packed, int block) -> Tensor"); }
TORCH_LIBRARY_IMPL(tailor_kernels, CPU, m) { m.impl("dot_bf16", dot_bf16); }
