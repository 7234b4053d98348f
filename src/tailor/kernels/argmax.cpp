// Greedy decoding's argmax over bf16 logits, without a cast of the whole row to fp32 first, and over fp32
// logits (torch's own fp32 argmax takes about 100 us on a 49k vocabulary). AVX-512F alone.
#include "bf16.h"

namespace {

using tailor::widen;
using tailor::widen1;

inline __m512 load16(const uint16_t* p) { return widen(p); }
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline float one(uint16_t v) { return widen1(v); }
inline float one(float v) { return v; }

// Per row of x (R, V) bf16 or fp32, the index of its largest value, the first one on ties: torch's argmax
// (greedy decoding's logits, 49k wide).
template <typename T>
at::Tensor argmax_rows(const at::Tensor& x, at::ScalarType type) {
  TORCH_CHECK(x.scalar_type() == type && x.dim() == 2 && x.is_contiguous() && x.size(1) > 0,
              "x: contiguous (R, V) bf16 or fp32");
  const int64_t r = x.size(0), v = x.size(1);
  at::Tensor out = at::empty({r}, x.options().dtype(at::kLong));
  const auto* xp = reinterpret_cast<const T*>(x.data_ptr());
  auto* op = out.data_ptr<int64_t>();
  at::parallel_for(0, r, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* p = xp + row * v;
      __m512 best = _mm512_set1_ps(-INFINITY);
      __m512i where = _mm512_setzero_si512(), at = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
      const __m512i step = _mm512_set1_epi32(16);
      int64_t i = 0;
      bool nan = false;
      for (; i + 16 <= v; i += 16) {
        const __m512 value = load16(p + i);
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
        const float value = one(p[i]);
        nan |= value != value;
        if (!any || value > top) top = value, index = i, any = true;
      }
      if (nan) {  // torch's argmax takes the first NaN as the largest
        for (int64_t j = 0; j < v; ++j) {
          const float value = one(p[j]);
          if (value != value) { index = j; break; }
        }
      }
      op[row] = index;
    }
  });
  return out;
}

at::Tensor argmax_bf16(const at::Tensor& x) { return argmax_rows<uint16_t>(x, at::kBFloat16); }
at::Tensor argmax_f32(const at::Tensor& x) { return argmax_rows<float>(x, at::kFloat); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(tailor_kernels, m) {
  m.def("argmax_bf16(Tensor x) -> Tensor");
  m.def("argmax_f32(Tensor x) -> Tensor");
}
TORCH_LIBRARY_IMPL(tailor_kernels, CPU, m) {
  m.impl("argmax_bf16", argmax_bf16);
  m.impl("argmax_f32", argmax_f32);
}
