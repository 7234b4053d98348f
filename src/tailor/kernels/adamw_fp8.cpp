// AdamW with its two moments kept in 8 bits (train.optimizer adamw_fp8): one pass over each weight, its
// gradient and both moments, a block of 256 values at a time. Each moment is stored as 8-bit codes relative
// to its block's largest magnitude, kept as one fp32 scale per block (the block-wise scheme of 8-bit
// optimizers, bitsandbytes' and torchao's), here with closed-form codes instead of a searched table:
//   first moment:  a sign, then a 4-bit exponent and 3 mantissa bits of |m| / max|m| (2^-14 .. 1; below: 0);
//   second moment: a 5-bit exponent and 3 mantissa bits of v / max v (2^-31 .. 1; below: the smallest code,
//                  never 0, so a tiny v can only shrink a step, never blow it up by m / eps).
// Codes round to nearest: stochastic rounding at 3 mantissa bits would make beta2 = 0.999's second moment a
// random walk with noise near its own size (the error decays by 0.1% a step). A value that changes less than
// half a code a step follows its block's scale instead, which is stored exactly and moves every step.
// The step itself is adamw.cpp's, on the decoded moments; the weight update reads the unrounded new moments.
// train/adamw_fp8.py's torch reference reproduces it bit for bit (-ffp-contract=off, as adamw.cpp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "adamw.h"

namespace {

using namespace adamw_common;

constexpr int64_t BLOCK = 256;
constexpr uint32_t M_LOW = 113;  // the first moment's smallest biased exponent: 2^-14 of the block's max
constexpr uint32_t V_LOW = 96;   // the second moment's: 2^-31

// A magnitude in [0, 1] as (biased exponent << 3 | 3 mantissa bits), rounded to nearest (a carry moves the exponent).
inline uint32_t rounded(float r) { return (bits_of(r) + (1U << 19)) >> 20; }

inline uint8_t encode_m(float x, float inv_max) {
  const uint32_t q = rounded(std::fabs(x) * inv_max);
  const uint32_t code = q >= (M_LOW << 3) ? q - ((M_LOW - 1) << 3) : 0;  // 8 .. 120, or 0 for zero
  return uint8_t((bits_of(x) >> 31) << 7 | code);
}

inline float decode_m(uint8_t c) {
  const uint32_t code = c & 127U;
  const uint32_t magnitude = code ? (code + ((M_LOW - 1) << 3)) << 20 : 0;
  return float_of(uint32_t(c >> 7) << 31 | magnitude);
}

inline uint8_t encode_v(float x, float inv_max) {
  const uint32_t q = rounded(x * inv_max);
  return uint8_t(q >= (V_LOW << 3) ? q - (V_LOW << 3) : 0);  // 0 .. 248
}

inline float decode_v(uint8_t c) { return float_of((uint32_t(c) + (V_LOW << 3)) << 20); }

// One block: update the weights from the decoded moments, then store the new moments' codes and scales.
template <typename G>
__attribute__((always_inline)) inline void update_block(float* p, const G* g, uint8_t* mq, float* m_scale, uint8_t* vq,
                                                        float* v_scale, int64_t begin, int64_t len, const Hyper& h) {
  float m_new[BLOCK], v_new[BLOCK];
  const float ms = *m_scale, vs = *v_scale;
  uint32_t m_top = 0, v_top = 0;  // the largest |m| and v as bit patterns: integers order non-negative floats as
  // the floats, and an integer maximum vectorises where a float one would need -ffinite-math-only
  for (int64_t j = 0; j < len; ++j) {
    const int64_t i = begin + j;
    const float gi = gradient(g, i) * h.inv_scale;
    const float mi = h.b1 * (decode_m(mq[i]) * ms) + h.one_minus_b1 * gi;
    const float vi = h.b2 * (decode_v(vq[i]) * vs) + h.one_minus_b2 * (gi * gi);
    const float denom = std::sqrt(vi) * h.inv_bc2_sqrt + h.eps;
    p[i] = p[i] * h.decay + h.neg_step * (mi / denom);
    m_new[j] = mi;
    v_new[j] = vi;
    const uint32_t ma = bits_of(mi) & 0x7FFFFFFFU, va = bits_of(vi);
    m_top = ma > m_top ? ma : m_top;
    v_top = va > v_top ? va : v_top;
  }
  const float m_max = float_of(m_top), v_max = float_of(v_top);
  *m_scale = m_max;
  *v_scale = v_max;
  const float m_inv = m_max > 0.0F ? 1.0F / m_max : 0.0F;
  const float v_inv = v_max > 0.0F ? 1.0F / v_max : 0.0F;
  for (int64_t j = 0; j < len; ++j) {
    mq[begin + j] = encode_m(m_new[j], m_inv);
    vq[begin + j] = encode_v(v_new[j], v_inv);
  }
}

template <typename G>
__attribute__((always_inline)) inline void update_blocks(float* p, const G* g, uint8_t* mq, float* ms, uint8_t* vq, float* vs,
                                                         int64_t n, int64_t first, int64_t last, const Hyper& h) {
  for (int64_t b = first; b < last; ++b) {
    const int64_t begin = b * BLOCK;
    update_block(p, g, mq, ms + b, vq, vs + b, begin, std::min(BLOCK, n - begin), h);
  }
}

// On x86-64 compiled for AVX-512F, AVX2 and the baseline; the loader picks the best this CPU runs.
#if defined(__x86_64__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void update(float* p, const float* g, uint8_t* mq, float* ms, uint8_t* vq, float* vs, int64_t n, int64_t first,
            int64_t last, const Hyper& h) {
  update_blocks(p, g, mq, ms, vq, vs, n, first, last, h);
}

#if defined(__x86_64__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void update(float* p, const uint16_t* g, uint8_t* mq, float* ms, uint8_t* vq, float* vs, int64_t n, int64_t first,
            int64_t last, const Hyper& h) {
  update_blocks(p, g, mq, ms, vq, vs, n, first, last, h);
}

void adamw_fp8_(at::Tensor param, const at::Tensor& grad, at::Tensor exp_avg, at::Tensor exp_avg_scale,
                at::Tensor exp_avg_sq, at::Tensor exp_avg_sq_scale, double b1, double one_minus_b1, double b2,
                double one_minus_b2, double decay, double neg_step, double inv_bc2_sqrt, double eps, double inv_scale) {
  TORCH_CHECK(param.scalar_type() == at::kFloat, "adamw_fp8: fp32 weights");
  TORCH_CHECK(exp_avg.scalar_type() == at::kByte && exp_avg_sq.scalar_type() == at::kByte, "adamw_fp8: uint8 moment codes");
  TORCH_CHECK(exp_avg_scale.scalar_type() == at::kFloat && exp_avg_sq_scale.scalar_type() == at::kFloat, "adamw_fp8: fp32 scales");
  TORCH_CHECK(param.is_contiguous() && grad.is_contiguous() && exp_avg.is_contiguous() && exp_avg_sq.is_contiguous() &&
              exp_avg_scale.is_contiguous() && exp_avg_sq_scale.is_contiguous(), "adamw_fp8: contiguous tensors");
  const int64_t n = param.numel();
  const int64_t blocks = (n + BLOCK - 1) / BLOCK;
  TORCH_CHECK(grad.numel() == n && exp_avg.numel() == n && exp_avg_sq.numel() == n, "adamw_fp8: sizes differ");
  TORCH_CHECK(exp_avg_scale.numel() == blocks && exp_avg_sq_scale.numel() == blocks, "adamw_fp8: one scale per 256 values");
  const Hyper h = hyper(b1, one_minus_b1, b2, one_minus_b2, decay, neg_step, inv_bc2_sqrt, eps, inv_scale);
  float* p = param.data_ptr<float>();
  uint8_t* mq = exp_avg.data_ptr<uint8_t>();
  uint8_t* vq = exp_avg_sq.data_ptr<uint8_t>();
  float* ms = exp_avg_scale.data_ptr<float>();
  float* vs = exp_avg_sq_scale.data_ptr<float>();
  with_gradient(grad, [&](auto g) {
    at::parallel_for(0, blocks, 256, [&](int64_t first, int64_t last) { update(p, g, mq, ms, vq, vs, n, first, last, h); });
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tailor_portable, m) {
  m.def("adamw_fp8_(Tensor(a!) param, Tensor grad, Tensor(b!) exp_avg, Tensor(c!) exp_avg_scale, Tensor(d!) exp_avg_sq, "
        "Tensor(e!) exp_avg_sq_scale, float b1, float one_minus_b1, float b2, float one_minus_b2, float decay, "
        "float neg_step, float inv_bc2_sqrt, float eps, float inv_scale) -> ()");
}

TORCH_LIBRARY_IMPL(tailor_portable, CPU, m) { m.impl("adamw_fp8_", &adamw_fp8_); }
