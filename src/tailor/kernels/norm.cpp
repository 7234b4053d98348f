// RMSNorm: the end of transformers' LlamaRMSNorm for decoding (bf16, bit for bit), and the whole norm with its
// backward for training (fp32, one pass each way).
#include "bf16.h"

#include <ATen/ops/zeros.h>
#include <tuple>

namespace {

using tailor::store;
using tailor::widen;

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

// RMSNorm for training on fp32 rows (autocast keeps the residual stream in fp32): y = w * (x * rstd),
// rstd = 1 / sqrt(mean(x^2) + eps), one pass; torch's version is seven ops forward and more backward,
// each a pass over the activations. Not bit for bit torch's (the sum runs in another order).
// The weight may be bf16 too (decoding bf16 weights in fp32 on CPUs without native bf16): widened exactly.
std::tuple<at::Tensor, at::Tensor> rms_norm_fp32(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(), "x: contiguous (R, H) fp32");
  const int64_t r = x.size(0), h = x.size(1);
  const bool half = weight.scalar_type() == at::kBFloat16;
  TORCH_CHECK((half || weight.scalar_type() == at::kFloat) && weight.numel() == h && weight.is_contiguous(),
              "weight: (H) fp32 or bf16");
  TORCH_CHECK(h % 16 == 0, "H: a multiple of 16");
  at::Tensor out = at::empty({r, h}, x.options()), rstd = at::empty({r}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = half ? nullptr : weight.data_ptr<float>();
  const auto* wh = half ? reinterpret_cast<const uint16_t*>(weight.data_ptr()) : nullptr;
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
        _mm512_storeu_ps(op + row * h + i, _mm512_mul_ps(half ? widen(wh + i) : _mm512_loadu_ps(wp + i),
                                                          _mm512_mul_ps(_mm512_loadu_ps(in + i), f)));
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

}  // namespace

TORCH_LIBRARY_FRAGMENT(tailor_kernels, m) {
  m.def("rms_scale_bf16(Tensor x, Tensor variance, Tensor weight, float eps) -> Tensor");
  m.def("rms_norm_fp32(Tensor x, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rms_norm_fp32_backward(Tensor dy, Tensor x, Tensor rstd, Tensor weight) -> (Tensor, Tensor)");
}
TORCH_LIBRARY_IMPL(tailor_kernels, CPU, m) {
  m.impl("rms_scale_bf16", rms_scale_bf16);
  m.impl("rms_norm_fp32", rms_norm_fp32);
  m.impl("rms_norm_fp32_backward", rms_norm_fp32_backward);
}
