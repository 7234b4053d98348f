// Products of a few bf16 rows (decoding) with a bf16 weight matrix, bit for bit what oneDNN's matmul gives.
//
// oneDNN (torch's bf16 F.linear on AVX512-BF16 CPUs) packs the weight into pairs along K on every
// call, then accumulates each output over K blocks with vdpbf16ps: within a block one fp32
// accumulator per output, pairs in order; the block sums are added in order. Packing the weight
// once and streaming it here does the same arithmetic without the per-call copy. The K block is a
// parameter: the Python side finds oneDNN's block for each shape by comparing outputs
// (kernels/matmul.py) and uses this only where they agree.
#include "bf16.h"

#include <sys/syscall.h>
#include <unistd.h>

namespace {

using tailor::LANES;

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

}  // namespace

TORCH_LIBRARY_FRAGMENT(tailor_kernels, m) {
  m.def("dot_bf16(Tensor x, Tensor packed, int block) -> Tensor");
  m.def("dot_amx(Tensor x, Tensor packed, int block) -> Tensor");
}
TORCH_LIBRARY_IMPL(tailor_kernels, CPU, m) {
  m.impl("dot_bf16", dot_bf16);
  m.impl("dot_amx", dot_amx);
}
