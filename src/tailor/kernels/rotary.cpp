// The rotary position embedding: a decoding step's (bf16 or fp32, each op rounded as torch's, with the cache writes)
// and training's (bf16 in and out, fp32 inside, forward and backward).
#include "bf16.h"

#include <ATen/ops/empty_like.h>

namespace {

using tailor::round1;
using tailor::store;
using tailor::widen;
using tailor::widen1;

// A decoding step's rotary embedding and cache writes in one pass. h (B, q, (heads + 2 kv) D) is the q|k|v
// product; cos, sin (B, q, D); all of one dtype, bf16 or fp32. Queries and keys turn as transformers turns
// them, t * cos + rotate_half(t) * sin, each op rounded as its torch op is (`Turn`). Keys and values go into
// the caches (B, kv, L, D) at `slots` (B, q); the queries come back as (B, heads, q, D).
template <typename T, typename Turn>
at::Tensor rotary_step(const at::Tensor& h, const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys,
                       at::Tensor values, const at::Tensor& slots, int64_t heads, int64_t kv_heads, at::ScalarType type,
                       Turn turn) {
  TORCH_CHECK(h.scalar_type() == type && h.dim() == 3 && h.is_contiguous(), "h: contiguous (B, q, W) of the step's dtype");
  const int64_t b = h.size(0), q = h.size(1), d = cos.size(-1), length = keys.size(2);
  TORCH_CHECK(h.size(2) == (heads + 2 * kv_heads) * d && d % 2 == 0, "h's width is not (heads + 2 kv) D");
  TORCH_CHECK(cos.scalar_type() == type && sin.scalar_type() == type && cos.is_contiguous() &&
              sin.is_contiguous() && cos.numel() == b * q * d && sin.numel() == b * q * d, "cos, sin: contiguous (B, q, D), as h");
  TORCH_CHECK(keys.scalar_type() == type && values.scalar_type() == type && keys.is_contiguous() &&
              values.is_contiguous() && keys.sizes() == values.sizes() && keys.size(0) == b && keys.size(1) == kv_heads &&
              keys.size(3) == d, "caches: contiguous (B, kv, L, D), as h");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.is_contiguous() && slots.numel() == b * q, "slots: (B, q) int64");
  at::Tensor query = at::empty({b, heads, q, d}, h.options());
  const auto* hp = reinterpret_cast<const T*>(h.data_ptr());
  const auto* cp = reinterpret_cast<const T*>(cos.data_ptr());
  const auto* sp = reinterpret_cast<const T*>(sin.data_ptr());
  const int64_t* slot = slots.data_ptr<int64_t>();
  auto* qp = reinterpret_cast<T*>(query.data_ptr());
  auto* kp = reinterpret_cast<T*>(keys.data_ptr());
  auto* vp = reinterpret_cast<T*>(values.data_ptr());
  const int64_t half = d / 2, width = (heads + 2 * kv_heads) * d;
  for (int64_t row = 0; row < b; ++row)
    for (int64_t j = 0; j < q; ++j) {
      const int64_t at_slot = slot[row * q + j];
      TORCH_CHECK(at_slot >= 0 && at_slot < length, "a slot lies outside the cache");
      const T* t0 = hp + (row * q + j) * width;
      const T* c = cp + (row * q + j) * d;
      const T* s = sp + (row * q + j) * d;
      for (int64_t n = 0; n < heads + kv_heads; ++n) {
        const T* t = t0 + n * d;
        T* o = n < heads ? qp + ((row * heads + n) * q + j) * d : kp + ((row * kv_heads + n - heads) * length + at_slot) * d;
        for (int64_t e = 0; e < d; ++e) o[e] = turn(t[e], e < half ? t[e + half] : t[e - half], e < half, c[e], s[e]);
      }
      for (int64_t n = 0; n < kv_heads; ++n)
        std::memcpy(vp + ((row * kv_heads + n) * length + at_slot) * d, t0 + (heads + kv_heads + n) * d, d * sizeof(T));
    }
  return query;
}

// bf16: every op rounded to bf16 as torch's is. `other` is the partner value, negated in the first half.
at::Tensor rotary_bf16(const at::Tensor& h, const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys,
                       at::Tensor values, const at::Tensor& slots, int64_t heads, int64_t kv_heads) {
  return rotary_step<uint16_t>(h, cos, sin, keys, values, slots, heads, kv_heads, at::kBFloat16,
                               [](uint16_t t, uint16_t other, bool first, uint16_t c, uint16_t s) {
                                 const float turned = first ? -widen1(other) : widen1(other);
                                 const float a = widen1(round1(widen1(t) * widen1(c)));
                                 const float b = widen1(round1(turned * widen1(s)));
                                 return round1(a + b);
                               });
}

// fp32 (bf16 weights decoded in fp32 on CPUs without native bf16): to fp32 rounding (the compiler may fuse the
// multiply-add). AVX-512F alone.
at::Tensor rotary_f32(const at::Tensor& h, const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys,
                      at::Tensor values, const at::Tensor& slots, int64_t heads, int64_t kv_heads) {
  return rotary_step<float>(h, cos, sin, keys, values, slots, heads, kv_heads, at::kFloat,
                            [](float t, float other, bool first, float c, float s) {
                              return t * c + (first ? -other : other) * s;
                            });
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

TORCH_LIBRARY_FRAGMENT(tailor_kernels, m) {
  m.def("rotary_bf16(Tensor h, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, Tensor slots, int heads, int kv_heads) -> Tensor");
  m.def("rotary_f32(Tensor h, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, Tensor slots, int heads, int kv_heads) -> Tensor");
  m.def("rotary_train_bf16(Tensor x, Tensor cos, Tensor sin, bool backward) -> Tensor");
}
TORCH_LIBRARY_IMPL(tailor_kernels, CPU, m) {
  m.impl("rotary_bf16", rotary_bf16);
  m.impl("rotary_f32", rotary_f32);
  m.impl("rotary_train_bf16", rotary_train_bf16);
}
