// Products of fp32 rows with a bf16 weight matrix, in fp32, for CPUs with AVX-512 but without AVX512-BF16.
//
// There bf16 arithmetic is emulated (oneDNN's bf16 F.linear ran decoding at half the speed of fp32), while
// fp32 weights make every decoding step read twice the bytes. llama.cpp's answer on such CPUs is ours too:
// keep the weights 16-bit, widen them to fp32 in registers (a bf16 value is the top half of an fp32 one, so
// widening is a shift and is exact) and multiply-add in fp32. The result is the fp32 product of the rows
// with the bf16 weights, summed in this kernel's order: it agrees with F.linear(x, weight.float()) to fp32
// rounding, not bit for bit.
//
// The steps between the products have fp32 passes of their own: norm.cpp's rms_norm_fp32 (with a bf16 weight),
// rotary.cpp's rotary_f32 and argmax.cpp's argmax_f32.
//
// Only AVX-512F instructions run here (the extension is compiled with more flags; nothing below converts to
// bf16, the one operation the compiler could emit an AVX512-BF16 instruction for).
#include "bf16.h"

namespace {

using tailor::LANES;
constexpr int64_t AHEAD = 2048;  // int32s: how far ahead of the loads the stream is prefetched (8 KiB: 1 and 4 KiB measured slower)

// rows R of x (fp32, K each) against one task's U blocks of 16 outputs, packed as `pack_widen` lays them out:
// for each pair of K, U x 16 pairs of bf16, so a task reads one contiguous stretch of the weight. Even and
// odd K go to separate accumulators: two independent chains per output block keep the FMA units busy at
// one row.
template <int R, int U>
void tile(const float* x, int64_t k, const uint32_t* w, float* out, int64_t n_out) {
  const int64_t pairs = k / 2;
  __m512 even[R][U], odd[R][U];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u) even[r][u] = odd[r][u] = _mm512_setzero_ps();
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t p = 0; p < pairs; ++p) {
    const uint32_t* wp = w + p * U * LANES;
    for (int u = 0; u < U; ++u)  // each of this pair's cache lines, 8 KiB ahead, into L2
      _mm_prefetch(reinterpret_cast<const char*>(wp + AHEAD + u * LANES), _MM_HINT_T1);
    __m512 lo[U], hi[U];
    for (int u = 0; u < U; ++u) {
      const __m512i wv = _mm512_loadu_si512(wp + u * LANES);
      lo[u] = _mm512_castsi512_ps(_mm512_slli_epi32(wv, 16));   // K = 2p: the low half of each pair
      hi[u] = _mm512_castsi512_ps(_mm512_and_si512(wv, high));  // K = 2p + 1: the high half, in place
    }
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * k + 2 * p]), b = _mm512_set1_ps(x[r * k + 2 * p + 1]);
      for (int u = 0; u < U; ++u) {
        even[r][u] = _mm512_fmadd_ps(a, lo[u], even[r][u]);
        odd[r][u] = _mm512_fmadd_ps(b, hi[u], odd[r][u]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u) _mm512_storeu_ps(out + r * n_out + u * LANES, _mm512_add_ps(even[r][u], odd[r][u]));
}

template <int U>
void group(const float* x, int64_t rows, int64_t k, const uint32_t* w, float* out, int64_t n_out) {
  switch (rows) {  // 2 x R x U accumulators, U weight vectors and 2 broadcasts fit the 32 registers up to R = 3
    case 1: tile<1, U>(x, k, w, out, n_out); break;
    case 2: tile<2, U>(x, k, w, out, n_out); break;
    default: tile<3, U>(x, k, w, out, n_out); break;
  }
}

// x (M, K) fp32, packed (N/(16U), K/2, 16U) int32 pairs of bf16 with U 1 or 4; returns (M, N) fp32. Each
// task takes U blocks of 16 outputs and runs every row against them, three rows at a time, while those
// weights sit in cache. Each output's sum runs in the same order whatever the number of rows, so a row's
// result does not depend on the rows beside it (drafted tokens are checked as their one-token steps would be).
at::Tensor dot_widen(const at::Tensor& x, const at::Tensor& packed) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(), "x: contiguous (M, K) fp32");
  TORCH_CHECK(packed.scalar_type() == at::kInt && packed.dim() == 3 && packed.is_contiguous(), "packed: (N/(16U), K/2, 16U) int32");
  const int64_t m = x.size(0), k = x.size(1), tasks = packed.size(0), pairs = packed.size(1), width = packed.size(2);
  TORCH_CHECK(k == 2 * pairs && (width == LANES || width == 4 * LANES), "shapes do not agree");
  at::Tensor out = at::empty({m, tasks * width}, x.options());
  const float* xp = x.data_ptr<float>();
  const auto* wp = reinterpret_cast<const uint32_t*>(packed.data_ptr());
  float* op = out.data_ptr<float>();
  const int64_t n = tasks * width;
  constexpr int R = 3;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t r = 0; r < m; r += R) {
        const int64_t rows = m - r < R ? m - r : R;
        const uint32_t* w = wp + t * pairs * width;
        float* o = op + r * n + t * width;
        if (width == LANES) group<1>(xp + r * k, rows, k, w, o, n);
        else group<4>(xp + r * k, rows, k, w, o, n);
      }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tailor_kernels, m) { m.def("dot_widen(Tensor x, Tensor packed) -> Tensor"); }
TORCH_LIBRARY_IMPL(tailor_kernels, CPU, m) { m.impl("dot_widen", dot_widen); }
