// What the optimizer steps (adamw.cpp, adamw_fp8.cpp) share: float bits, a gradient read as fp32 or bf16, the
// step's scalars, and the choice of loop by the gradient's dtype.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>

namespace adamw_common {

inline uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

inline float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

inline float widen(uint16_t h) { return float_of(uint32_t(h) << 16); }  // bf16 to fp32, exactly

inline float gradient(const float* g, int64_t i) { return g[i]; }
inline float gradient(const uint16_t* g, int64_t i) { return widen(g[i]); }  // a bf16 gradient, exactly

// The step's scalars (train/adamw_bf16.py constants), each rounded to fp32 where it is used; `stream` keys
// adamw.cpp's rounding noise.
struct Hyper {
  float b1, one_minus_b1, b2, one_minus_b2, decay, neg_step, inv_bc2_sqrt, eps, inv_scale;
  uint32_t stream;
};

inline Hyper hyper(double b1, double one_minus_b1, double b2, double one_minus_b2, double decay, double neg_step,
                   double inv_bc2_sqrt, double eps, double inv_scale, int64_t stream = 0) {
  return Hyper{float(b1), float(one_minus_b1), float(b2), float(one_minus_b2), float(decay), float(neg_step),
               float(inv_bc2_sqrt), float(eps), float(inv_scale), uint32_t(stream)};
}

// Calls `run` with the gradient's values: a `const float*`, or a bf16 gradient's bits as a `const uint16_t*`.
template <typename Run>
void with_gradient(const at::Tensor& grad, Run&& run) {
  TORCH_CHECK(grad.scalar_type() == at::kFloat || grad.scalar_type() == at::kBFloat16, "fp32 or bf16 gradients");
  if (grad.scalar_type() == at::kFloat) {
    run(grad.data_ptr<float>());
  } else {
    run(reinterpret_cast<const uint16_t*>(grad.data_ptr<at::BFloat16>()));
  }
}

}  // namespace adamw_common
