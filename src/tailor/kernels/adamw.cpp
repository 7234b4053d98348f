// AdamW with its two moments kept in bf16 (train.optimizer adamw_bf16): one pass over each weight, its
// gradient and both moments. The moments are widened to fp32, updated as torch's AdamW updates them, used
// for this step's weight update, and stored rounded stochastically to bf16: round-to-nearest would lose
// every change smaller than half a bf16 step, and beta2 = 0.999 changes the second moment by 0.1% a
// step against a step of 0.4-0.8%, so it would never decay. The rounding noise is a hash of the element's
// index and a per-tensor, per-step stream, so results do not depend on the thread count, and the torch
// reference in train/adamw_bf16.py reproduces them bit for bit (no FMA contraction: -ffp-contract=off; and
// reciprocals multiplied, not divided by, since torch divides a tensor by a scalar that way).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

#include "adamw.h"

namespace {

using namespace adamw_common;

inline uint32_t mix(uint32_t x) {  // a 32-bit integer hash; the reference repeats it with int64 tensors
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x2c1b3c6dU;
  x ^= x >> 16;
  return x;
}

inline uint16_t narrow(float f, uint32_t noise) {  // noise in [0, 65536): stochastic rounding to bf16
  return uint16_t((bits_of(f) + noise) >> 16);
}

// Inlined into each `update` below, so it is compiled for each of their targets.
template <typename G>
__attribute__((always_inline)) inline void update_range(float* p, const G* g, uint16_t* m, uint16_t* v, int64_t begin, int64_t end, const Hyper& h) {
  for (int64_t i = begin; i < end; ++i) {
    float gi = gradient(g, i) * h.inv_scale;
    float mi = h.b1 * widen(m[i]) + h.one_minus_b1 * gi;
    float vi = h.b2 * widen(v[i]) + h.one_minus_b2 * (gi * gi);
    float denom = std::sqrt(vi) * h.inv_bc2_sqrt + h.eps;
    p[i] = p[i] * h.decay + h.neg_step * (mi / denom);
    uint32_t r = mix(uint32_t(i) ^ h.stream);
    m[i] = narrow(mi, r & 0xFFFFU);
    v[i] = narrow(vi, r >> 16);
  }
}

// On x86-64 compiled for AVX-512F, AVX2 and the baseline; the loader picks the best this CPU runs.
#if defined(__x86_64__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void update(float* p, const float* g, uint16_t* m, uint16_t* v, int64_t begin, int64_t end, const Hyper& h) {
  update_range(p, g, m, v, begin, end, h);
}

#if defined(__x86_64__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void update(float* p, const uint16_t* g, uint16_t* m, uint16_t* v, int64_t begin, int64_t end, const Hyper& h) {
  update_range(p, g, m, v, begin, end, h);
}

void adamw_bf16_(at::Tensor param, const at::Tensor& grad, at::Tensor exp_avg, at::Tensor exp_avg_sq, double b1,
                 double one_minus_b1, double b2, double one_minus_b2, double decay, double neg_step,
                 double inv_bc2_sqrt, double eps, double inv_scale, int64_t stream) {
  TORCH_CHECK(param.scalar_type() == at::kFloat, "adamw_bf16: fp32 weights");
  TORCH_CHECK(exp_avg.scalar_type() == at::kBFloat16 && exp_avg_sq.scalar_type() == at::kBFloat16, "adamw_bf16: bf16 moments");
  TORCH_CHECK(param.is_contiguous() && grad.is_contiguous() && exp_avg.is_contiguous() && exp_avg_sq.is_contiguous(),
              "adamw_bf16: contiguous tensors");
  const int64_t n = param.numel();
  TORCH_CHECK(grad.numel() == n && exp_avg.numel() == n && exp_avg_sq.numel() == n, "adamw_bf16: sizes differ");
  const Hyper h = hyper(b1, one_minus_b1, b2, one_minus_b2, decay, neg_step, inv_bc2_sqrt, eps, inv_scale, stream);
  float* p = param.data_ptr<float>();
  auto* m = reinterpret_cast<uint16_t*>(exp_avg.data_ptr<at::BFloat16>());
  auto* v = reinterpret_cast<uint16_t*>(exp_avg_sq.data_ptr<at::BFloat16>());
  with_gradient(grad, [&](auto g) {
    at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) { update(p, g, m, v, begin, end, h); });
  });
}

}  // namespace

TORCH_LIBRARY(tailor_portable, m) {
  m.def("adamw_bf16_(Tensor(a!) param, Tensor grad, Tensor(b!) exp_avg, Tensor(c!) exp_avg_sq, float b1, "
        "float one_minus_b1, float b2, float one_minus_b2, float decay, float neg_step, float inv_bc2_sqrt, "
        "float eps, float inv_scale, int stream) -> ()");
}

TORCH_LIBRARY_IMPL(tailor_portable, CPU, m) { m.impl("adamw_bf16_", &adamw_bf16_); }
