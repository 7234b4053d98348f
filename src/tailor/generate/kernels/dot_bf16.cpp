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
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <tuple>
#include <torch/library.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cstdint>
#include <cmath>
#include <cstring>

namespace {

constexpr int LANES = 16;  // outputs per vector

// 16 bf16 values widened to fp32 (exact), and 16 fp32 values rounded to bf16 (to nearest even, as torch rounds).
inline __m512 widen(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline void store(uint16_t* p, __m512 v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v)); }

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

// On CPUs with AMX oneDNN multiplies with tdpbf16ps instead: a tile of up to 16 rows against 16
// outputs, 32 K elements per instruction, into an fp32 accumulator tile. The instruction's own
// rounding (not that of a chain of vdpbf16ps) is only had from the instruction, so this path runs it
// in the order oneDNN does: the K chunks in order, from zero at each K block, the block sums added.
struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

bool amx_permitted() {
  static const bool ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return ok;
}

constexpr int AMX_U = 4;  // accumulator tiles (tmm4..tmm7): 64 outputs per task

// tmm0: x's rows, one K chunk; tmm1: one group's chunk of packed weight; tmm4 + u: group u's sums.
template <int U>
void amx_tile(const uint16_t* x, int64_t m, int64_t k, const uint32_t* w, int64_t block, uint16_t* out,
              int64_t n_out, float* sums, float* total) {
  const int64_t pairs = k / 2, chunks = k / 32, block_chunks = block / 32;
  for (int64_t start = 0; start < chunks; start += block_chunks) {
    const int64_t stop = start + block_chunks < chunks ? start + block_chunks : chunks;
    if (U > 0) _tile_zero(4);
    if (U > 1) _tile_zero(5);
    if (U > 2) _tile_zero(6);
    if (U > 3) _tile_zero(7);
    for (int64_t c = start; c < stop; ++c) {
      _tile_loadd(0, x + c * 32, k * 2);
      const uint32_t* wc = w + c * 16 * LANES;
// The tile numbers are immediates, so each step is spelled out.
#define TAILOR_STEP(u, sum)                                  \
      if (U > u) {                                           \
        _tile_stream_loadd(1, wc + u * pairs * LANES, LANES * 4); \
        _tile_dpbf16ps(sum, 0, 1);                           \
      }
      TAILOR_STEP(0, 4) TAILOR_STEP(1, 5) TAILOR_STEP(2, 6) TAILOR_STEP(3, 7)
#undef TAILOR_STEP
    }
    if (U > 0) _tile_stored(4, sums + 0 * 16 * LANES, LANES * 4);
    if (U > 1) _tile_stored(5, sums + 1 * 16 * LANES, LANES * 4);
    if (U > 2) _tile_stored(6, sums + 2 * 16 * LANES, LANES * 4);
    if (U > 3) _tile_stored(7, sums + 3 * 16 * LANES, LANES * 4);
    for (int u = 0; u < U; ++u)
      for (int64_t r = 0; r < m; ++r) {
        float* t = total + (u * 16 + r) * LANES;
        const __m512 s = _mm512_loadu_ps(sums + (u * 16 + r) * LANES);
        _mm512_storeu_ps(t, start == 0 ? _mm512_add_ps(_mm512_setzero_ps(), s) : _mm512_add_ps(_mm512_loadu_ps(t), s));
      }
  }
  for (int u = 0; u < U; ++u)
    for (int64_t r = 0; r < m; ++r)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * n_out + u * LANES),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(total + (u * 16 + r) * LANES)));
}

void configure(TileConfig& config, int64_t rows) {
  config.rows[0] = rows, config.colsb[0] = 64;   // x: rows of 32 bf16
  config.rows[1] = 16, config.colsb[1] = 64;     // weight: 16 pairs of K by 16 outputs
  for (int t = 4; t < 8; ++t) config.rows[t] = rows, config.colsb[t] = 64;  // sums: rows of 16 fp32
  _tile_loadconfig(&config);
}

// As dot_bf16, with AMX tiles: x (M, K % 32 == 0) bf16, 16 rows at a time; block a multiple of 32.
// Each task takes 64 outputs and runs every row tile against them while those weights sit in cache.
at::Tensor dot_amx(const at::Tensor& x, const at::Tensor& packed, int64_t block) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.is_contiguous(), "x: contiguous (M, K) bf16");
  TORCH_CHECK(packed.scalar_type() == at::kInt && packed.dim() == 3 && packed.is_contiguous(), "packed: (N/16, K/2, 16) int32");
  const int64_t m = x.size(0), k = x.size(1), groups = packed.size(0), pairs = packed.size(1);
  TORCH_CHECK(k == 2 * pairs && packed.size(2) == LANES && k % 32 == 0 && block % 32 == 0 && block > 0, "shapes do not agree");
  TORCH_CHECK(m >= 1, "no rows");
  TORCH_CHECK(amx_permitted(), "the kernel may not use AMX tiles here");
  at::Tensor out = at::empty({m, groups * LANES}, x.options());
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const auto* wp = reinterpret_cast<const uint32_t*>(packed.data_ptr());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  const int64_t n = groups * LANES;
  at::parallel_for(0, (groups + AMX_U - 1) / AMX_U, 1, [&](int64_t begin, int64_t end) {
    TileConfig config;
    int64_t configured = 0;
    alignas(64) float sums[AMX_U * 16 * LANES], total[AMX_U * 16 * LANES];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t * AMX_U;
      const uint32_t* wg = wp + g * pairs * LANES;
      for (int64_t r = 0; r < m; r += 16) {
        const int64_t rows = m - r < 16 ? m - r : 16;
        if (rows != configured) configure(config, rows), configured = rows;
        const uint16_t* xr = xp + r * k;
        uint16_t* o = op + r * n + g * LANES;
        switch (groups - g < AMX_U ? groups - g : AMX_U) {
          case 1: amx_tile<1>(xr, rows, k, wg, block, o, n, sums, total); break;
          case 2: amx_tile<2>(xr, rows, k, wg, block, o, n, sums, total); break;
          case 3: amx_tile<3>(xr, rows, k, wg, block, o, n, sums, total); break;
          default: amx_tile<4>(xr, rows, k, wg, block, o, n, sums, total); break;
        }
      }
    }
    _tile_release();  // oneDNN configures the tiles again for its own calls
  });
  return out;
}

// Per row of x (R, V) bf16, the index of its largest value, the first one on ties: torch's argmax,
// without converting the whole row to fp32 first (greedy decoding's logits, 49k wide).
at::Tensor argmax_bf16(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.is_contiguous() && x.size(1) > 0,
              "x: contiguous (R, V) bf16");
  const int64_t r = x.size(0), v = x.size(1);
  at::Tensor out = at::empty({r}, x.options().dtype(at::kLong));
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  auto* op = out.data_ptr<int64_t>();
  at::parallel_for(0, r, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const uint16_t* p = xp + row * v;
      __m512 best = _mm512_set1_ps(-INFINITY);
      __m512i where = _mm512_setzero_si512(), at = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
      const __m512i step = _mm512_set1_epi32(16);
      int64_t i = 0;
      bool nan = false;
      for (; i + 16 <= v; i += 16) {
        const __m512 value = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i))), 16));
        nan |= _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q) != 0;
        const __mmask16 more = _mm512_cmp_ps_mask(value, best, _CMP_GT_OQ);  // strictly: a lane keeps its first
        best = _mm512_mask_mov_ps(best, more, value);
        where = _mm512_mask_mov_epi32(where, more, at);
        at = _mm512_add_epi32(at, step);
      }
      alignas(64) float values[16];
      alignas(64) int32_t indices[16];
      _mm512_store_ps(values, best);
      _mm512_store_si512(indices, where);
      float top = -INFINITY;
      int64_t index = 0;
      bool any = false;
      for (int l = 0; l < 16 && i > 0; ++l)
        if (!any || values[l] > top || (values[l] == top && indices[l] < index)) top = values[l], index = indices[l], any = true;
      for (; i < v; ++i) {  // the tail, in order: later equal values never win
        uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
        float value;
        std::memcpy(&value, &bits, 4);
        nan |= value != value;
        if (!any || value > top) top = value, index = i, any = true;
      }
      if (nan) {  // torch's argmax takes the first NaN as the largest
        for (int64_t j = 0; j < v; ++j) {
          uint32_t bits = static_cast<uint32_t>(p[j]) << 16;
          float value;
          std::memcpy(&value, &bits, 4);
          if (value != value) { index = j; break; }
        }
      }
      op[row] = index;
    }
  });
  return out;
}


// The end of transformers' LlamaRMSNorm on bf16 rows, given each row's mean square (torch computes that:
// its summation order is its own): + eps, rsqrt, x * that in fp32, to bf16, weight * that in bf16, each
// rounded as the torch op it stands for.
at::Tensor rms_scale_bf16(const at::Tensor& x, const at::Tensor& variance, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.is_contiguous(), "x: contiguous (R, H) bf16");
  const int64_t r = x.size(0), h = x.size(1);
  TORCH_CHECK(variance.scalar_type() == at::kFloat && variance.numel() == r && variance.is_contiguous(), "variance: (R) fp32");
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.dim() == 1 && weight.size(0) == h && weight.is_contiguous(),
              "weight: contiguous (H) bf16");
  TORCH_CHECK(h % 16 == 0, "H: a multiple of 16");
  at::Tensor out = at::empty({r, h}, x.options());
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const auto* wp = reinterpret_cast<const uint16_t*>(weight.data_ptr());
  const float* vp = variance.data_ptr<float>();
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  const float epsilon = static_cast<float>(eps);
  for (int64_t row = 0; row < r; ++row) {
    const float sum = vp[row] + epsilon;
    const __m512 factor = _mm512_set1_ps(1.0f / std::sqrt(sum));
    const uint16_t* in = xp + row * h;
    for (int64_t i = 0; i < h; i += 16) {
      const __m512 normed = _mm512_mul_ps(widen(in + i), factor);
      const __m512 rounded = _mm512_cvtpbh_ps(_mm512_cvtneps_pbh(normed));  // .to(bf16)
      const __m512 product = _mm512_mul_ps(widen(wp + i), rounded);
      store(op + row * h + i, product);
    }
  }
  return out;
}


inline float widen1(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t round1(float f) {  // to bf16, to nearest even, as torch rounds
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (f != f) return 0x7fc0;
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

// A decoding step's rotary embedding and cache writes in one pass. h (B, q, (heads + 2 kv) D) bf16 is
// the q|k|v product; cos, sin (B, q, D). Queries and keys turn as transformers turns them, each op
// rounded to bf16 as its torch op is: (t * cos) + (rotate_half(t) * sin). Keys and values go into the
// caches (B, kv, L, D) at `slots` (B, q); the queries come back as (B, heads, q, D).
at::Tensor rotary_bf16(const at::Tensor& h, const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys,
                       at::Tensor values, const at::Tensor& slots, int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(h.scalar_type() == at::kBFloat16 && h.dim() == 3 && h.is_contiguous(), "h: contiguous (B, q, W) bf16");
  const int64_t b = h.size(0), q = h.size(1), d = cos.size(-1), length = keys.size(2);
  TORCH_CHECK(h.size(2) == (heads + 2 * kv_heads) * d && d % 2 == 0, "h's width is not (heads + 2 kv) D");
  TORCH_CHECK(cos.scalar_type() == at::kBFloat16 && sin.scalar_type() == at::kBFloat16 && cos.is_contiguous() &&
              sin.is_contiguous() && cos.numel() == b * q * d && sin.numel() == b * q * d, "cos, sin: contiguous (B, q, D) bf16");
  TORCH_CHECK(keys.scalar_type() == at::kBFloat16 && values.scalar_type() == at::kBFloat16 && keys.is_contiguous() &&
              values.is_contiguous() && keys.sizes() == values.sizes() && keys.size(0) == b && keys.size(1) == kv_heads &&
              keys.size(3) == d, "caches: contiguous (B, kv, L, D) bf16");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.is_contiguous() && slots.numel() == b * q, "slots: (B, q) int64");
  at::Tensor query = at::empty({b, heads, q, d}, h.options());
  const auto* hp = reinterpret_cast<const uint16_t*>(h.data_ptr());
  const auto* cp = reinterpret_cast<const uint16_t*>(cos.data_ptr());
  const auto* sp = reinterpret_cast<const uint16_t*>(sin.data_ptr());
  const int64_t* slot = slots.data_ptr<int64_t>();
  auto* qp = reinterpret_cast<uint16_t*>(query.data_ptr());
  auto* kp = reinterpret_cast<uint16_t*>(keys.data_ptr());
  auto* vp = reinterpret_cast<uint16_t*>(values.data_ptr());
  const int64_t half = d / 2, width = (heads + 2 * kv_heads) * d;
  for (int64_t row = 0; row < b; ++row)
    for (int64_t j = 0; j < q; ++j) {
      const int64_t at_slot = slot[row * q + j];
      TORCH_CHECK(at_slot >= 0 && at_slot < length, "a slot lies outside the cache");
      const uint16_t* t0 = hp + (row * q + j) * width;
      const uint16_t* c = cp + (row * q + j) * d;
      const uint16_t* s = sp + (row * q + j) * d;
      for (int64_t n = 0; n < heads + kv_heads; ++n) {
        const uint16_t* t = t0 + n * d;
        uint16_t* o = n < heads ? qp + ((row * heads + n) * q + j) * d
                                : kp + ((row * kv_heads + n - heads) * length + at_slot) * d;
        for (int64_t e = 0; e < d; ++e) {
          const float turned = e < half ? -widen1(t[e + half]) : widen1(t[e - half]);
          const float first = widen1(round1(widen1(t[e]) * widen1(c[e])));
          const float second = widen1(round1(turned * widen1(s[e])));
          o[e] = round1(first + second);
        }
      }
      for (int64_t n = 0; n < kv_heads; ++n)
        std::memcpy(vp + ((row * kv_heads + n) * length + at_slot) * d, t0 + (heads + kv_heads + n) * d, d * 2);
    }
  return query;
}


// RMSNorm for training on fp32 rows (autocast keeps the residual stream in fp32): y = w * (x * rstd),
// rstd = 1 / sqrt(mean(x^2) + eps), one pass; torch's version is seven ops forward and more backward,
// each a pass over the activations. Not bit for bit torch's (the sum runs in another order).
std::tuple<at::Tensor, at::Tensor> rms_norm_fp32(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(), "x: contiguous (R, H) fp32");
  const int64_t r = x.size(0), h = x.size(1);
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.numel() == h && weight.is_contiguous(), "weight: (H) fp32");
  TORCH_CHECK(h % 16 == 0, "H: a multiple of 16");
  at::Tensor out = at::empty({r, h}, x.options()), rstd = at::empty({r}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  const float epsilon = static_cast<float>(eps);
  at::parallel_for(0, r, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float* in = xp + row * h;
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < h; i += 16) {
        const __m512 v = _mm512_loadu_ps(in + i);
        acc = _mm512_fmadd_ps(v, v, acc);
      }
      const float factor = 1.0f / std::sqrt(_mm512_reduce_add_ps(acc) / h + epsilon);
      rp[row] = factor;
      const __m512 f = _mm512_set1_ps(factor);
      for (int64_t i = 0; i < h; i += 16)
        _mm512_storeu_ps(op + row * h + i, _mm512_mul_ps(_mm512_loadu_ps(wp + i), _mm512_mul_ps(_mm512_loadu_ps(in + i), f)));
    }
  });
  return {out, rstd};
}

// Its backward: with n = x * rstd and g = dy * w, dx = rstd * (g - n * mean(g * n)); dw = sum over rows of dy * n,
// summed per thread and then across threads.
std::tuple<at::Tensor, at::Tensor> rms_norm_fp32_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& rstd,
                                                          const at::Tensor& weight) {
  TORCH_CHECK(dy.scalar_type() == at::kFloat && dy.sizes() == x.sizes() && dy.is_contiguous(), "dy: contiguous, as x");
  const int64_t r = x.size(0), h = x.size(1);
  at::Tensor dx = at::empty({r, h}, x.options());
  const int threads = at::get_num_threads();
  at::Tensor partial = at::zeros({threads, h}, x.options());
  const float* gp = dy.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* rp = rstd.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* dp = dx.data_ptr<float>();
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, r, 16, [&](int64_t begin, int64_t end) {
    float* dw = pp + at::get_thread_num() * h;
    for (int64_t row = begin; row < end; ++row) {
      const float* in = xp + row * h;
      const float* g = gp + row * h;
      const __m512 f = _mm512_set1_ps(rp[row]);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < h; i += 16) {
        const __m512 n = _mm512_mul_ps(_mm512_loadu_ps(in + i), f);
        const __m512 gy = _mm512_loadu_ps(g + i);
        acc = _mm512_fmadd_ps(_mm512_mul_ps(gy, _mm512_loadu_ps(wp + i)), n, acc);
        _mm512_storeu_ps(dw + i, _mm512_fmadd_ps(gy, n, _mm512_loadu_ps(dw + i)));
      }
      const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(acc) / h);
      for (int64_t i = 0; i < h; i += 16) {
        const __m512 n = _mm512_mul_ps(_mm512_loadu_ps(in + i), f);
        const __m512 gw = _mm512_mul_ps(_mm512_loadu_ps(g + i), _mm512_loadu_ps(wp + i));
        _mm512_storeu_ps(dp + row * h + i, _mm512_mul_ps(f, _mm512_sub_ps(gw, _mm512_mul_ps(n, mean))));
      }
    }
  });
  return {dx, partial.sum(0)};
}

// Rotary embedding for training on bf16 queries or keys x (B, H, T, D), any strides with D contiguous, and
// fp32 cos, sin (B or 1, T, D) contiguous: out = x * cos + rotate_half(x) * sin in fp32, rounded once to bf16,
// which is what transformers' rotary (fp32 under autocast) followed by autocast's cast gives. With
// `backward`, x is the output's gradient and the result the input's: g * cos - rotate_half(g * sin).
// Multiply then add, never fused: the products round as torch's do.
__attribute__((optimize("fp-contract=off")))
at::Tensor rotary_train_bf16(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool backward) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 4 && x.stride(3) == 1, "x: (B, H, T, D) bf16, D contiguous");
  const int64_t b = x.size(0), heads = x.size(1), t = x.size(2), d = x.size(3), half = d / 2;
  TORCH_CHECK(d % 32 == 0, "D: a multiple of 32");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat && cos.is_contiguous() && sin.is_contiguous()
              && cos.dim() == 3 && (cos.size(0) == b || cos.size(0) == 1) && cos.size(1) == t && cos.size(2) == d && sin.sizes() == cos.sizes(),
              "cos, sin: contiguous (B or 1, T, D) fp32");
  const int64_t cb = cos.size(0) == 1 ? 0 : 1;  // one table for every row of the batch
  at::Tensor out = at::empty_like(x);  // x's layout: the projections' transposes stay views
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const int64_t xs0 = x.stride(0), xs1 = x.stride(1), xs2 = x.stride(2);
  const int64_t os0 = out.stride(0), os1 = out.stride(1), os2 = out.stride(2);
  at::parallel_for(0, b * heads * t, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bi = row / (heads * t), hi = (row / t) % heads, ti = row % t;
      const uint16_t* in = xp + bi * xs0 + hi * xs1 + ti * xs2;
      uint16_t* o = op + bi * os0 + hi * os1 + ti * os2;
      const float* c = cp + (bi * cb * t + ti) * d;
      const float* s = sp + (bi * cb * t + ti) * d;
      for (int64_t i = 0; i < half; i += 16) {
        const __m512 x1 = widen(in + i), x2 = widen(in + half + i);
        if (!backward) {  // (x1, x2) -> (x1 c1 - x2 s1, x2 c2 + x1 s2)
          store(o + i, _mm512_sub_ps(_mm512_mul_ps(x1, _mm512_loadu_ps(c + i)), _mm512_mul_ps(x2, _mm512_loadu_ps(s + i))));
          store(o + half + i, _mm512_add_ps(_mm512_mul_ps(x2, _mm512_loadu_ps(c + half + i)),
                                            _mm512_mul_ps(x1, _mm512_loadu_ps(s + half + i))));
        } else {  // (g1, g2) -> (g1 c1 + g2 s2, g2 c2 - g1 s1)
          store(o + i, _mm512_add_ps(_mm512_mul_ps(x1, _mm512_loadu_ps(c + i)), _mm512_mul_ps(x2, _mm512_loadu_ps(s + half + i))));
          store(o + half + i, _mm512_sub_ps(_mm512_mul_ps(x2, _mm512_loadu_ps(c + half + i)),
                                            _mm512_mul_ps(x1, _mm512_loadu_ps(s + i))));
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(tailor_kernels, m) {
  m.def("dot_bf16(Tensor x, Tensor packed, int block) -> Tensor");
  m.def("dot_amx(Tensor x, Tensor packed, int block) -> Tensor");
  m.def("argmax_bf16(Tensor x) -> Tensor");
  m.def("rms_scale_bf16(Tensor x, Tensor variance, Tensor weight, float eps) -> Tensor");
  m.def("rms_norm_fp32(Tensor x, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rms_norm_fp32_backward(Tensor dy, Tensor x, Tensor rstd, Tensor weight) -> (Tensor, Tensor)");
  m.def("rotary_train_bf16(Tensor x, Tensor cos, Tensor sin, bool backward) -> Tensor");
  m.def("rotary_bf16(Tensor h, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, Tensor slots, int heads, int kv_heads) -> Tensor");
}
TORCH_LIBRARY_IMPL(tailor_kernels, CPU, m) {
  m.impl("dot_bf16", dot_bf16);
  m.impl("dot_amx", dot_amx);
  m.impl("argmax_bf16", argmax_bf16);
  m.impl("rms_scale_bf16", rms_scale_bf16);
  m.impl("rotary_bf16", rotary_bf16);
  m.impl("rotary_train_bf16", rotary_train_bf16);
  m.impl("rms_norm_fp32", rms_norm_fp32);
  m.impl("rms_norm_fp32_backward", rms_norm_fp32_backward);
}
