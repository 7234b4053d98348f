// Products of fp32 rows with a bf16 weight matrix, in fp32, for CPUs with AVX-512 but without AVX512-BF16.
//
// There bf16 arithmetic is emulated (oneDNN's bf16 F.linear ran decoding at half the speed of fp32), while
// fp32 weights make every decoding step read twice the bytes. llama.cpp's answer on such CPUs is ours too:
// keep the weights 16-bit, widen them to fp32 in registers (a bf16 value is the top half of an fp32 one, so
// widening is a shift and is exact) and multiply-add in fp32. The result is the fp32 product of the rows
// with the bf16 weights, summed in this kernel's order: it agrees with F.linear(x, weight.float()) to fp32
// rounding, not bit for bit.
//
// Beside the product, the fp32 steps between the products (norm, rotary embedding with the cache writes,
// argmax), each one pass instead of several torch ops.
//
// Only AVX-512F instructions run here (the extension is compiled with more flags; nothing below converts to
// bf16, the one operation the compiler could emit an AVX512-BF16 instruction for).
#include "bf16.h"

#include <ATen/ops/empty_like.h>

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

// The steps between the products, in fp32, one pass each: at one token a step runs 61 norms, 30 rotary
// embeddings and an argmax over the vocabulary, each of which costs torch several ops of a few microseconds.

inline float widen_one(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// LlamaRMSNorm on fp32 rows x (M, H) with a bf16 weight (H): weight * (x * rsqrt(mean(x^2) + eps)), as
// transformers computes it in fp32; the mean sums in this kernel's order.
at::Tensor rms_widen(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(), "x: contiguous (M, H) fp32");
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.is_contiguous() && weight.numel() == x.size(1) &&
              x.size(1) % LANES == 0, "weight: (H) bf16, H a multiple of 16");
  const int64_t m = x.size(0), h = x.size(1);
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const auto* wp = reinterpret_cast<const uint16_t*>(weight.data_ptr());
  float* op = out.data_ptr<float>();
  for (int64_t r = 0; r < m; ++r) {
    const float* row = xp + r * h;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < h; i += LANES) {
      const __m512 v = _mm512_loadu_ps(row + i);
      sum = _mm512_fmadd_ps(v, v, sum);
    }
    const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(sum) / static_cast<float>(h) + static_cast<float>(eps)));
    for (int64_t i = 0; i < h; i += LANES) {
      const __m512 w = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + i))), 16));
      _mm512_storeu_ps(op + r * h + i, _mm512_mul_ps(w, _mm512_mul_ps(_mm512_loadu_ps(row + i), scale)));
    }
  }
  return out;
}

// A decoding step's rotary embedding and cache writes in fp32, as rotary.cpp's rotary_bf16 does on bf16:
// h (B, q, (heads + 2 kv) D) the q|k|v product; cos, sin (B, q, D); caches (B, kv, L, D) written at `slots`
// (B, q); returns the queries (B, heads, q, D). Each value is t * cos + rotate_half(t) * sin.
at::Tensor rotary_f32(const at::Tensor& h, const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys,
                      at::Tensor values, const at::Tensor& slots, int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(h.scalar_type() == at::kFloat && h.dim() == 3 && h.is_contiguous(), "h: contiguous (B, q, W) fp32");
  const int64_t b = h.size(0), q = h.size(1), d = cos.size(-1), length = keys.size(2);
  TORCH_CHECK(h.size(2) == (heads + 2 * kv_heads) * d && d % 2 == 0, "h's width is not (heads + 2 kv) D");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat && cos.is_contiguous() &&
              sin.is_contiguous() && cos.numel() == b * q * d && sin.numel() == b * q * d, "cos, sin: contiguous (B, q, D) fp32");
  TORCH_CHECK(keys.scalar_type() == at::kFloat && values.scalar_type() == at::kFloat && keys.is_contiguous() &&
              values.is_contiguous() && keys.sizes() == values.sizes() && keys.size(0) == b && keys.size(1) == kv_heads &&
              keys.size(3) == d, "caches: contiguous (B, kv, L, D) fp32");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.is_contiguous() && slots.numel() == b * q, "slots: (B, q) int64");
  at::Tensor query = at::empty({b, heads, q, d}, h.options());
  const float* hp = h.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const int64_t* slot = slots.data_ptr<int64_t>();
  float* qp = query.data_ptr<float>();
  float* kp = keys.data_ptr<float>();
  float* vp = values.data_ptr<float>();
  const int64_t half = d / 2, width = (heads + 2 * kv_heads) * d;
  for (int64_t row = 0; row < b; ++row)
    for (int64_t j = 0; j < q; ++j) {
      const int64_t at_slot = slot[row * q + j];
      TORCH_CHECK(at_slot >= 0 && at_slot < length, "a slot lies outside the cache");
      const float* t0 = hp + (row * q + j) * width;
      const float* c = cp + (row * q + j) * d;
      const float* s = sp + (row * q + j) * d;
      for (int64_t n = 0; n < heads + kv_heads; ++n) {
        const float* t = t0 + n * d;
        float* o = n < heads ? qp + ((row * heads + n) * q + j) * d
                             : kp + ((row * kv_heads + n - heads) * length + at_slot) * d;
        for (int64_t e = 0; e < d; ++e) o[e] = t[e] * c[e] + (e < half ? -t[e + half] : t[e - half]) * s[e];
      }
      for (int64_t n = 0; n < kv_heads; ++n)
        std::memcpy(vp + ((row * kv_heads + n) * length + at_slot) * d, t0 + (heads + kv_heads + n) * d, d * 4);
    }
  return query;
}

// logits.argmax(-1) on fp32 rows (M, V): the first index of the largest value; NaN counts as largest, as
// torch's argmax takes it.
at::Tensor argmax_f32(const at::Tensor& logits) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.dim() == 2 && logits.is_contiguous() && logits.size(1) > 0,
              "logits: contiguous (M, V) fp32");
  const int64_t m = logits.size(0), v = logits.size(1);
  at::Tensor out = at::empty({m}, logits.options().dtype(at::kLong));
  const float* lp = logits.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  for (int64_t r = 0; r < m; ++r) {
    const float* row = lp + r * v;
    // The row's maximum by vectors, then the first index that holds it (a second short pass).
    __m512 best = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    bool nan = false;
    for (; i + LANES <= v; i += LANES) {
      const __m512 x = _mm512_loadu_ps(row + i);
      nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q) != 0;
      best = _mm512_max_ps(best, x);
    }
    float top = _mm512_reduce_max_ps(best);
    for (; i < v; ++i) nan |= row[i] != row[i], top = row[i] > top ? row[i] : top;
    int64_t at = 0;
    for (int64_t j = 0; j < v; ++j)
      if (nan ? row[j] != row[j] : row[j] == top) { at = j; break; }
    op[r] = at;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tailor_kernels, m) {
  m.def("dot_widen(Tensor x, Tensor packed) -> Tensor");
  m.def("rms_widen(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("rotary_f32(Tensor h, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, Tensor slots, int heads, int kv_heads) -> Tensor");
  m.def("argmax_f32(Tensor logits) -> Tensor");
}
TORCH_LIBRARY_IMPL(tailor_kernels, CPU, m) {
  m.impl("dot_widen", dot_widen);
  m.impl("rms_widen", rms_widen);
  m.impl("rotary_f32", rotary_f32);
  m.impl("argmax_f32", argmax_f32);
}
