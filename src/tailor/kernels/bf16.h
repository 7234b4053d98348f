// What the kernels' sources share: torch's headers, and bf16 <-> fp32 conversions that round as torch rounds.
// The sources (matmul.cpp, argmax.cpp, norm.cpp, rotary.cpp) build into one extension, loaded by build.py;
// each registers its own ops in the namespace torch.ops.tailor_kernels.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace tailor {

constexpr int LANES = 16;  // fp32 values (and outputs of a product) per vector

// 16 bf16 values widened to fp32 (exact), and 16 fp32 values rounded to bf16 (to nearest even, as torch rounds).
inline __m512 widen(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline void store(uint16_t* p, __m512 v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v)); }

// One value each way.
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

}  // namespace tailor
